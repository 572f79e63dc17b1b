"""Write prometheusrule.yaml (the Prometheus Operator's PrometheusRule) from ../prometheus/rules.yml, the one
source of shipml's alerting rules: `make k8s-rules` after editing rules.yml (a test checks the two agree)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
RULES = HERE.parent / "prometheus" / "rules.yml"
OUT = HERE / "prometheusrule.yaml"

HEADER = """\
# Made by `make k8s-rules` (deploy/k8s/render_rules.py) from deploy/prometheus/rules.yml: edit that file, not
# this one. For the Prometheus Operator; the rules' comments (assumptions, runbook links) are in rules.yml.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as rules.yml writes them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def render(rules_text: str) -> str:
    """The PrometheusRule whose spec is rules.yml's groups, as YAML text."""
    groups = yaml.safe_load(rules_text)["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "shipml", "labels": {"app.kubernetes.io/name": "shipml"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=120)


def main() -> int:
    OUT.write_text(render(RULES.read_text()))
    sys.stderr.write(f"wrote {OUT.name} from {RULES.name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
