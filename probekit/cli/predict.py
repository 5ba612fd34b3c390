"""`probekit predict`: apply the probe saved beside a result record to audio files."""

from __future__ import annotations

from pathlib import Path

import typer

from probekit.cli import app, console


@app.command("predict")
def predict_cmd(
    audio: list[Path] = typer.Argument(..., help="Audio files to classify."),
    record: Path = typer.Option(..., "--record", "-r", help="Result record JSON (its .probe.safetensors beside it); "
                                "a local file or an fsspec URL (s3://bucket/results/...)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "--weights", "-c",
                                           help="The backbone weights the record names (by sha256); none for random init."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write every file's scores as CSV here."),
    top: int = typer.Option(3, "--top", help="Classes shown per file (multi-class; multi-label shows every class above the threshold)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda:1, ..."),
    batch_size: int = typer.Option(16, "--batch-size", help="Files per encoder call."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling of the checkpoint."),
) -> None:
    """Apply a trained probe to audio files: class scores, the transcript (asr: column `transcript`) or the
    detected events (sed-* heads: onset, offset in seconds, label), VQT through the live encoder. The backbone is rebuilt from the record (its weights
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
    say = lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False)  # noqa: E731
    if pred.kind == "transcript":  # ASR: the greedy CTC transcript of each file
        for _, row in df.iterrows():
            if not isinstance(row["error"], str):
                say(f"{row['path']}: {row['transcript']!r}")
    elif pred.kind == "events":  # frame-wise heads: each file's events after the recorded post-processing
        for path, rows in df.groupby("path", sort=False):
            if isinstance(rows["error"].iloc[0], str):
                continue
            evs = rows.dropna(subset=["label"])
            say(f"{path}: " + (", ".join(f"{r.label} {r.onset:.2f}-{r.offset:.2f} s" for r in evs.itertuples())
                               or "(no event)"))
    classes = df.columns[4:] if pred.kind in ("scores", "live") else []
    for _, row in (df.iterrows() if len(classes) else ()):
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
    failed = df.drop_duplicates("path")["error"].dropna().tolist() if pred.kind == "events" else df["error"].dropna().tolist()
    for msg in failed:
        err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    if failed:
        err_console.print(f"{len(failed)} of {len(audio)} file(s) could not be read; the others were predicted",
                          highlight=False)
        raise typer.Exit(2)
