"""``pixelgen plugins``: the models, data sets and likelihoods installed, read from the registry alone
(the plugins load torch; nothing of training, storage or the study loads)."""

from __future__ import annotations

import argparse

from pixelgen import registry


def cmd_plugins(args: argparse.Namespace) -> int:
    reg = registry.get_registry()
    print("models:")
    for name in registry.list_models():
        spec, plugin = reg.models[name]
        print(f"  {name}  (plugin {plugin}) {spec.description}")
        for key, default in spec.defaults().items():
            print(f"      {key} = {default!r}")
    print("data sets:")
    for name in registry.list_datasets():
        spec, plugin = reg.datasets[name]
        options = [f"{k}={v!r}" for k, v in spec.options().items() if spec.downloads or k != "download"]
        if not spec.downloads:
            options.append("manual download")
        print(f"  {name}  (plugin {plugin}) {spec.description}" + (f" [{', '.join(options)}]" if options else ""))
    print("likelihoods:")
    for name in registry.list_likelihoods():
        spec, plugin = reg.likelihoods[name]
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        print(f"  {name}  (plugin {plugin}) {spec.description}" + (f" [{options}]" if options else ""))
    for name, error in sorted(reg.failures.items()):
        print(f"plugin {name} failed to load: {error}")
    return 0
