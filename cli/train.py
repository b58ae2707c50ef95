"""train.py's command line: every flag is generated from the typed configuration (engine.config), so flags and
``--config FILE.yaml`` keys pass the same checks; the result is a TrainConfig handed to engine.trainer.run."""
from __future__ import annotations

import argparse

from cli.common import ArgumentParser, new_parser
from engine import config as C
from tgs.errors import cli


def build_parser() -> ArgumentParser:
    p = new_parser("train.py", f"Train one fold of the TGS salt UNet.\n\n{C.RECIPE}",
                   argument_default=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML file whose keys (flag names with _ or -) override the defaults")
    groups = {title: p.add_argument_group(title) for title in C.SECTIONS}
    for name, (title, f) in C.options().items():
        o = f.metadata["option"]
        default = "none" if f.default is None else f.default
        help_text = f"{o.help} (default: {default})" if o.kind != "bool" else o.help
        if o.kind == "bool":
            action = groups[title].add_argument(C.flag(name), action="store_true", help=help_text)
        else:
            metavar = "{" + ",".join(map(str, o.choices)) + "}" if o.choices else name.upper()
            action = groups[title].add_argument(C.flag(name), metavar=metavar, help=help_text)
        action.declared = o  # its value is checked by the declaration (engine.config.combine), as in other scripts
    return p


def given(argv=None) -> tuple[dict, str | None]:
    """({option: command-line value} for the flags present, the --config file)."""
    values = vars(build_parser().parse_args(argv))
    return {k: v for k, v in values.items() if k != "config"}, values.get("config")


def parse(argv=None) -> C.TrainConfig:
    return parse_given(argv)[0]


def parse_given(argv=None) -> tuple[C.TrainConfig, set[str]]:
    """The config, and the options the command line and the config file named (read once)."""
    flags, config_file = given(argv)
    from_file = C.read_yaml(config_file) if config_file else {}
    return C.combine(flags, from_file), set(flags) | set(from_file)


@cli
def main(argv=None) -> int:
    from engine import trainer

    cfg, named = parse_given(argv)
    for note in cfg.unused(named):
        print(f"note: {note}")
    return trainer.run(cfg)
