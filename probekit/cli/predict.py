"""`probekit predict`: apply the probe saved beside a result record to audio files."""

from __future__ import annotations

from pathlib import Path

import typer

from probekit.cli import app, console


@app.command("predict")
def predict_cmd(
    audio: list[Path] = typer.Argument(..., help="Audio files to classify."),
    record: Path = typer.Option(..., "--record", "-r", help="Result record JSON (its .probe.safetensors beside it)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "--weights", "-c",
                                           help="The backbone weights the record names (by sha256); none for random init."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write every file's scores as CSV here."),
    top: int = typer.Option(3, "--top", help="Classes shown per file (multi-class; multi-label shows every class above the threshold)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda:1, ..."),
    batch_size: int = typer.Option(16, "--batch-size", help="Files per encoder call."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling of the checkpoint."),
) -> None:
    """Classify audio files with a trained probe: the backbone is rebuilt from the record (its weights
    must match the recorded sha256 or random-init seed), each file goes through the frontend, encoder,
    layers and token dtype evaluation used, and the probe scores it. Unreadable files are named, one line
    each; the others are still predicted (exit 2 when any failed). Example:
    probekit predict --record results/.../linear--default.json --checkpoint bat.safetensors a.wav b.wav
    """
    from probekit.cli import err_console
    from probekit.errors import ConfigError
    from probekit.predict import Predictor

    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    if output is not None and output.is_dir():
        raise ConfigError(f"--output {output}: is a folder", hint=f"give a file name, e.g. {output / 'predictions.csv'}")
    pred = Predictor(record, checkpoint=checkpoint, device=device, trust_checkpoint=trust_checkpoint,
                     batch_size=batch_size)
    df = pred.predict(audio)
    classes = df.columns[4:]
    for _, row in df.iterrows():
        if isinstance(row["error"], str):
            continue
        scores = row[classes].astype(float).sort_values(ascending=False, kind="stable")
        if pred.multilabel:
            shown = scores[scores >= pred.threshold]
            text = ", ".join(f"{c} {s:.3f}" for c, s in shown.items()) or f"(no class >= {pred.threshold:g})"
        else:
            text = ", ".join(f"{c} {s:.3f}" for c, s in scores.iloc[:top].items())
        console.print(f"{row['path']}: {text}", highlight=False, soft_wrap=True, markup=False)
    if output is not None:
        from probekit._io import atomic_write_text

        try:
            atomic_write_text(output, df.to_csv(index=False))
        except OSError as e:
            raise ConfigError(f"--output {output}: cannot write: {e.strerror or e}",
                              hint="pick a writable file name") from None
        console.print(f"predictions: {output}", highlight=False, soft_wrap=True, markup=False)
    failed = df["error"].dropna().tolist()
    for msg in failed:
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    if failed:
        err_console.print(f"{len(failed)} of {len(df)} file(s) could not be read; the others were predicted",
                          highlight=False)
        raise typer.Exit(2)
