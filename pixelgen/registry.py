"""The plugin registry: models and data sets found through the ``pixelgen`` entry points.

Plugins are loaded lazily, on the first call that needs them, so importing pixelgen reads
nothing. A plugin that fails to import is recorded with its name and error and does not
stop the others from loading (see :func:`plugin_failures`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any, Callable

import attrs
import pluggy

from pixelgen import hookspecs
from pixelgen.errors import RegistryError

ENTRY_POINT_GROUP = "pixelgen"


@attrs.frozen
class ModelSpec:
    """A model a plugin provides.

    Args:
        name: registry name, e.g. ``"pixelcnn"``.
        factory: callable (usually the ``nn.Module`` class) taking keyword hyperparameters.
        description: one line shown by ``pixelgen plugins``.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""

    def hyperparameters(self) -> dict[str, Any]:
        """Keyword hyperparameters of the factory with their defaults, in signature order."""
        return _keyword_defaults(self.factory)


@attrs.frozen
class DatasetSpec:
    """A data set a plugin provides.

    Args:
        name: registry name, e.g. ``"cifar10"``.
        factory: callable ``factory(root, split, **options)`` returning a map-style
            dataset of ``(uint8 tensor (C, H, W), int label)`` pairs.
        description: one line shown by ``pixelgen plugins``.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword options of the factory with their defaults (root and split excluded)."""
        opts = _keyword_defaults(self.factory)
        opts.pop("root", None)
        opts.pop("split", None)
        return opts


def _keyword_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    out: dict[str, Any] = {}
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        out[name] = None if param.default is inspect.Parameter.empty else param.default
    return out


@attrs.define
class Registry:
    """Models, data sets and plugin load failures gathered from one plugin manager."""

    manager: pluggy.PluginManager
    models: dict[str, tuple[ModelSpec, str]] = attrs.field(factory=dict)
    datasets: dict[str, tuple[DatasetSpec, str]] = attrs.field(factory=dict)
    failures: dict[str, str] = attrs.field(factory=dict)

    def collect(self) -> None:
        """(Re)build the name tables from every registered plugin's hooks."""
        self.models.clear()
        self.datasets.clear()
        for table, hook, kind in (
            (self.models, self.manager.hook.pixelgen_models, "model"),
            (self.datasets, self.manager.hook.pixelgen_datasets, "data set"),
        ):
            for impl in hook.get_hookimpls():
                plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
                try:
                    specs = impl.function() or []
                except Exception as exc:  # a broken plugin must not break the others
                    self.failures[plugin_name] = f"{type(exc).__name__}: {exc}"
                    continue
                for spec in specs:
                    if spec.name in table and table[spec.name][1] != plugin_name:
                        self.failures[plugin_name] = (
                            f"{kind} {spec.name!r} is already provided by plugin "
                            f"{table[spec.name][1]!r}"
                        )
                        continue
                    table[spec.name] = (spec, plugin_name)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loading every ``pixelgen`` entry point on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry(new_plugin_manager())
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if registry.manager.has_plugin(ep.name):
                continue  # the same distribution seen twice on sys.path
            try:
                module = ep.load()
            except Exception as exc:
                registry.failures[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            registry.manager.register(module, name=ep.name)
        registry.collect()
        _REGISTRY = registry
    return _REGISTRY


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (module or instance with hook implementations) at run time.

    Useful in notebooks and tests; installed packages should use the entry-point group.
    """
    registry = get_registry()
    registry.manager.register(plugin, name=name)
    registry.collect()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` and rebuild the tables."""
    registry = get_registry()
    registry.manager.unregister(name=name)
    registry.failures.pop(name, None)
    registry.collect()


def plugin_failures() -> dict[str, str]:
    """Plugins that failed to load: ``{entry point name: "ErrorType: message"}``."""
    return dict(get_registry().failures)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(get_registry().models)


def list_datasets() -> list[str]:
    """Names of every registered data set, sorted."""
    return sorted(get_registry().datasets)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; :class:`~pixelgen.errors.RegistryError` if none."""
    models = get_registry().models
    if name not in models:
        raise RegistryError(
            f"unknown model {name!r}; available models: {', '.join(sorted(models)) or 'none'}"
            + _failure_hint()
        )
    return models[name][0]


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; :class:`~pixelgen.errors.RegistryError` if none."""
    datasets = get_registry().datasets
    if name not in datasets:
        raise RegistryError(
            f"unknown data set {name!r}; available data sets: "
            f"{', '.join(sorted(datasets)) or 'none'}" + _failure_hint()
        )
    return datasets[name][0]


def plugin_of(name: str) -> str:
    """Name of the plugin that provides model or data set ``name``."""
    registry = get_registry()
    entry = registry.models.get(name) or registry.datasets.get(name)
    if entry is None:
        raise RegistryError(f"unknown model or data set {name!r}")
    return entry[1]


def _failure_hint() -> str:
    failures = get_registry().failures
    if not failures:
        return ""
    return " (plugins that failed to load: " + ", ".join(sorted(failures)) + ")"


def check_options(kind: str, name: str, given: dict[str, Any], known: dict[str, Any]) -> None:
    """Raise :class:`~pixelgen.errors.RegistryError` naming the first unknown key in ``given``."""
    for key in given:
        if key not in known:
            listing = ", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"
            raise RegistryError(
                f"{kind} {name!r} has no hyperparameter {key!r}; available: {listing}"
            )


def create_model(name: str, **hyperparameters: Any):
    """Build the registered model ``name`` with the given hyperparameters.

    Returns:
        an ``nn.Module`` mapping integer images ``(B, C, H, W)`` to logits
        ``(B, 256, C, H, W)``. Its resolved hyperparameters are kept in
        ``model.pixelgen_config = {"name": ..., "hyperparameters": {...}}`` so that a
        checkpoint can rebuild it.
    """
    spec = get_model_spec(name)
    known = spec.hyperparameters()
    check_options("model", name, hyperparameters, known)
    model = spec.factory(**hyperparameters)
    model.pixelgen_config = {"name": name, "hyperparameters": {**known, **hyperparameters}}
    return model


def create_dataset(name: str, root: str, split: str, **options: Any):
    """Build the registered data set ``name`` for ``split`` under ``root``."""
    spec = get_dataset_spec(name)
    check_options("data set", name, options, spec.options())
    return spec.factory(root=root, split=split, **options)
