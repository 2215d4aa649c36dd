"""``roadseg convert``: import published PyTorch weights into a RoadSeg checkpoint.

Options map onto :func:`app.service.convert.convert_checkpoint`; the file is read without PyTorch
and without running pickled code.
"""
from __future__ import annotations

import json
from typing import Optional

import click

from app.cli import cli
from app.cli.options import json_option, overwrite_option
from app.service.convert import LAYOUTS, convert_checkpoint


@cli.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model", required=True,
              help="Target network (see `roadseg models`), e.g. dlinknet34, enet, ddrnet23_slim.")
@click.option("--num-classes", type=int, default=None,
              help="Class count [default: the checkpoint's head, else the model's default].")
@click.option("--in-channels", type=int, default=3, show_default=True,
              help="Input bands of the network.")
@click.option("--source", type=click.Choice(LAYOUTS), default=None,
              help="Key layout of the PyTorch file [default: detected from its keys].")
@click.option("--no-strict", is_flag=True,
              help="Write even when torch weights are unused or network parameters missing.")
@overwrite_option("Replace an existing output checkpoint.")
@json_option("Print the conversion report as JSON.")
def convert_cmd(src: str, out: str, model: str, num_classes: Optional[int], in_channels: int,
                source: Optional[str], no_strict: bool, overwrite: bool, as_json: bool) -> None:
    """Convert the PyTorch checkpoint SRC (.pth/.th, zip or legacy) into OUT (.ckpt + .json).

    Supported: the D-LinkNet DeepGlobe release, torchvision ImageNet ResNets (as encoders),
    davidtvs/PyTorch-ENet, ydhongHIT/DDRNet (segmentation and ImageNet), lxtGH/GALD-DGCNet and
    torchvision's deeplabv3_resnet101 backbone.
    """
    report = convert_checkpoint(src, model, out, num_classes=num_classes,
                                in_channels=in_channels, strict=not no_strict,
                                source=source, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.summary())
    click.echo(f"wrote {report.output} ({report.num_classes} classes)")
