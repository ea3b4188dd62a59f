"""``skillyard approve keygen``: create an Ed25519 approver (or policy signer) key."""

from __future__ import annotations

from pathlib import Path

import click

from skillyard.cli.output import echo_json, wants_json


@click.group("approve")
def approve_group() -> None:
    """Approver keys."""


@approve_group.command("keygen")
@click.argument("key_id")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory for the private key file.",
)
def keygen_cmd(key_id: str, out: str) -> None:
    """Create KEY_ID.key.json (private, mode 0600) and print the public key to pin."""
    from skillyard.gate import keys

    key = keys.generate(key_id)
    path = Path(out) / f"{key_id}.key.json"
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        keys.write_key_file(path, key)
    except FileExistsError:
        raise click.ClickException(f"{path} already exists; refusing to overwrite a key") from None
    pinned = f"ed25519:{key['public_key']}"
    if wants_json():
        echo_json({"id": key_id, "key_file": str(path), "public_key": pinned})
        return
    click.echo(f"wrote {path} (keep it secret)")
    click.echo("pin the public key in the runtime config:")
    click.echo(f'  [gate.approvers]\n  {key_id} = "{pinned}"')
