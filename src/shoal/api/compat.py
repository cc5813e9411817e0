"""The Istio compatibility page (docs/istio-compatibility.md), generated from the models.

Every Istio kind and every field the spec models know, with its status in shoal: a
field is *supported* when the model accepts it and *refused* when it is declared
``NotSupported`` (setting it is an error naming it); a field the model does not know is
refused as ``unknown field``. Kinds Istio has and shoal does not accept are listed with
what to use instead. ``python -m shoal.api.compat > docs/istio-compatibility.md``
regenerates the page; a test keeps it equal to the code.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel

from shoal.api.kinds import KINDS
from shoal.api.meshconfig import MeshConfigFile
from shoal.api.types import _not_supported

ISTIO_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io",
                "extensions.istio.io")
# Istio kinds shoal does not accept, and what to do instead
NOT_ACCEPTED = {
    "WorkloadEntry (networking)": "shoal's `Workload` (`mesh.shoal.io/v1alpha1`), which "
                                  "`shoal run` registers with a verified identity",
    "WorkloadGroup (networking)": "`shoal run` on each VM (one agent registers each "
                                  "workload)",
    "ProxyConfig (networking)": "agent flags (`shoal run --help`)",
    "Telemetry (telemetry)": "metrics and access logs are on by default; tracing "
                             "`--trace-sampling`, access logs `--access-log`; SLOs: "
                             "`ServiceLevelObjective` (`telemetry.shoal.io`)",
    "WasmPlugin (extensions)": "`EnvoyFilter` with a Lua or other built-in filter",
}
HEADER = """# Istio compatibility

Generated from shoal's models by `python -m shoal.api.compat` (a test keeps this page
equal to the code). Every Istio kind shoal accepts, each field the models know, and its
status: **yes** (accepted and honoured), **refused** (known, not implemented: applying it
is an error naming the field). A field not listed is refused as `unknown field`. Nothing
is accepted and ignored. Semantics and limits per kind: [reference](reference.md),
[security](security.md), [traffic](traffic.md).
"""


def _refused(info: typing.Any) -> bool:
    return any(getattr(m, "func", None) is _not_supported for m in info.metadata)


def _models(annotation: typing.Any) -> Iterator[type[BaseModel]]:
    """The pydantic models inside a field's type (Optional, list, dict, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models(typing.get_args(annotation)[0])
        return
    if origin in (typing.Union, types.UnionType, list, dict, tuple) or origin is not None:
        for arg in typing.get_args(annotation):
            yield from _models(arg)


def _values(annotation: typing.Any) -> str:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return " (" + ", ".join(f"`{m.value}`" for m in arg) + ")"
    return ""


def fields(model: type[BaseModel], prefix: str = "",
           first: dict[type, str] | None = None) -> Iterator[tuple[str, bool, str]]:
    """(dotted path, supported, values) for every field of ``model``, depth first; a
    model met again is not expanded again but points at where it was."""
    first = {} if first is None else first
    first.setdefault(model, prefix.rstrip("."))
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        if _refused(info):
            yield path, False, ""
            continue
        subs = list(_models(info.annotation))
        again = [first[sub] for sub in subs if sub in first]
        if again and again[0]:
            yield path, True, _values(info.annotation) + f" (fields as `{again[0]}`)"
            continue
        yield path, True, _values(info.annotation)
        for sub in subs:
            if sub not in first:
                yield from fields(sub, f"{path}.", first)


def render() -> str:
    out = [HEADER]
    istio = [k for k in KINDS.values() if k.api_version.split("/")[0] in ISTIO_GROUPS]
    out.append("## Kinds\n\n| kind | apiVersions | status |\n|---|---|---|")
    for k in istio:
        out.append(f"| {k.name} | {', '.join(f'`{v}`' for v in k.api_versions)} | yes |")
    for name, instead in NOT_ACCEPTED.items():
        out.append(f"| {name} | — | not accepted: {instead} |")
    for k in istio:
        out.append(f"\n## {k.name}\n\n| field (`spec.`) | status |\n|---|---|")
        for path, ok, values in fields(k.spec):
            out.append(f"| `{path}` | {'yes' + values if ok else 'refused'} |")
    out.append("\n## MeshConfig (`shoal control-plane --mesh-config`)\n\n"
               "| field | status |\n|---|---|")
    for path, ok, values in fields(MeshConfigFile):
        out.append(f"| `{path}` | {'yes' + values if ok else 'refused'} |")
    out.append("| any other MeshConfig field | refused; `rootNamespace`, "
               "`outboundTrafficPolicy`, `accessLogFile`, `enableTracing`, `defaultConfig` "
               "name the control-plane flag that sets them |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
