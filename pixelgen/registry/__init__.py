"""The plugin registry: models, data sets and likelihoods found through the ``pixelgen``
entry points.

Plugins are loaded lazily, on the first call that needs them, so importing pixelgen reads
nothing. A plugin that fails to import is recorded with its name and error and does not
stop the others from loading (see :func:`plugin_failures`).
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any, Callable, Mapping

import attrs
import pluggy

from pixelgen.errors import HyperparameterError, Interrupted, RegistryError, did_you_mean, one_line
from pixelgen.nn.hyperparameters import LIKELIHOOD, N_LEVELS, Hyperparameter
from pixelgen.registry import hookspecs

ENTRY_POINT_GROUP = "pixelgen"


@attrs.frozen
class ModelSpec:
    """A model a plugin provides, with everything the core needs to know about it.

    Args:
        name: registry name, e.g. ``"pixelcnn"``.
        factory: callable (usually the ``nn.Module`` class) taking the hyperparameters
            below as keyword arguments.
        description: one line shown by ``pixelgen plugins``.
        hyperparameters: ``{name: Hyperparameter(default, help)}``, every keyword the
            factory takes (see :func:`pixelgen.nn.hyperparameters.stack_hyperparameters`). The core
            fills in ``in_channels`` from the data set where the model declares it.
        paper_bits_per_dim: published test bits/dim by data-set name, shown beside
            measured figures in reports, e.g. ``{"cifar10": 3.00}``.
        receptive_field: one paragraph on which earlier pixels the model sees, for reports.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    hyperparameters: Mapping[str, Hyperparameter] = attrs.field(factory=dict)
    paper_bits_per_dim: Mapping[str, float] = attrs.field(factory=dict)
    receptive_field: str = ""

    def defaults(self) -> dict[str, Any]:
        """``{name: default}`` of every hyperparameter, in declaration order."""
        return {name: hp.default for name, hp in self.hyperparameters.items()}

    def widths(self) -> list[str]:
        """The hyperparameters that are widths, in declaration order: integers named
        ``*_channels`` other than ``in_channels`` (the rule stated on
        :class:`~pixelgen.nn.blocks.Hyperparameter`)."""
        return [
            name for name, hp in self.hyperparameters.items()
            if name.endswith("_channels") and name != "in_channels"
            and isinstance(hp.default, int) and not isinstance(hp.default, bool)
        ]


@attrs.frozen
class DatasetSpec:
    """A data set a plugin provides.

    Args:
        name: registry name, e.g. ``"cifar10"``.
        factory: callable ``factory(root, split, **options)`` returning a map-style
            dataset of ``(uint8 tensor (C, H, W), int label)`` pairs.
        description: one line shown by ``pixelgen plugins``.
        splits: the official splits the factory answers: ``("train", "test")``, plus
            ``"val"`` for a data set that ships its own validation split (binarized MNIST's
            ``valid`` file), which :func:`pixelgen.data.load_splits` then uses instead of
            cutting one from ``"train"``.
        downloads: whether the factory's ``download`` option fetches missing files; False
            for a data set the user places by hand (``pixelgen plugins`` then says "manual
            download" instead of showing the option).
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""
    splits: tuple[str, ...] = ("train", "test")
    downloads: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool), kw_only=True)

    def options(self) -> dict[str, Any]:
        """Keyword options of the factory with their defaults (root and split excluded)."""
        opts = _keyword_defaults(self.factory)
        opts.pop("root", None)
        opts.pop("split", None)
        return opts


@attrs.frozen
class LikelihoodSpec:
    """A likelihood a plugin provides: the distribution a model's outputs define (see
    :class:`pixelgen.nn.likelihoods.Likelihood`), chosen by a model's ``likelihood``
    hyperparameter.

    Args:
        name: registry name, e.g. ``"logistic_mixture"``.
        factory: callable ``factory(n_levels, **options)`` returning a
            :class:`~pixelgen.nn.likelihoods.Likelihood`; ``n_levels`` is the model's.
        description: one line shown by ``pixelgen plugins``.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword options of the factory with their defaults (``n_levels`` excluded: the model's)."""
        opts = _keyword_defaults(self.factory)
        opts.pop("n_levels", None)
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
    """Models, data sets, likelihoods and plugin failures gathered from one plugin manager.

    A plugin that fails (import error, ``SystemExit``, a hook with a wrong signature or an
    unknown name, a hook that raises or returns anything but a list of specs) is recorded
    in ``failures`` and contributes nothing; the others load. A name two plugins claim is
    given to neither (``conflicts``), whatever the load order.
    """

    manager: pluggy.PluginManager
    models: dict[str, tuple[ModelSpec, str]] = attrs.field(factory=dict)
    datasets: dict[str, tuple[DatasetSpec, str]] = attrs.field(factory=dict)
    likelihoods: dict[str, tuple[LikelihoodSpec, str]] = attrs.field(factory=dict)
    failures: dict[str, str] = attrs.field(factory=dict)
    conflicts: dict[str, str] = attrs.field(factory=dict)
    sources: dict[str, str] = attrs.field(factory=dict)  # plugin name -> distribution

    def add(self, plugin: object, name: str, source: str) -> None:
        """Register ``plugin`` under ``name``; a plugin pluggy refuses is recorded as failed."""
        self.sources[name] = source
        try:
            self.manager.register(plugin, name=name)
            self.manager.check_pending()  # a hook pixelgen does not define (a misspelt name)
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(name=name)
            self.failures[name] = f"PluginValidationError: {one_line(exc, _FAILURE_CHARS)}"

    def collect(self) -> None:
        """(Re)build the name tables from every registered plugin's hooks."""
        self.failures = {k: v for k, v in self.failures.items() if not v.startswith(_HOOK_FAILURE)}
        self.conflicts.clear()
        self.models = self._claims(self.manager.hook.pixelgen_models, ModelSpec, "model")
        self.datasets = self._claims(self.manager.hook.pixelgen_datasets, DatasetSpec, "data set")
        self.likelihoods = self._claims(self.manager.hook.pixelgen_likelihoods, LikelihoodSpec, "likelihood")

    def _claims(self, hook: Any, spec_type: type, kind: str) -> dict[str, tuple[Any, str]]:
        claims: dict[str, list[tuple[Any, str]]] = {}
        for impl in hook.get_hookimpls():
            plugin = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            try:
                specs = _checked_specs(impl.function(), spec_type, kind)
            except BaseException as exc:  # a broken plugin must not break the others
                _reraise_a_stop(exc)
                self.failures[plugin] = f"{_HOOK_FAILURE}{type(exc).__name__}: {one_line(exc, _FAILURE_CHARS)}"
                continue
            for spec in specs:
                claims.setdefault(spec.name, []).append((spec, plugin))
        table = {}
        for name, claimants in claims.items():
            if len(claimants) == 1:
                table[name] = claimants[0]
                continue
            who = " and ".join(f"{plugin!r} ({self.sources.get(plugin, 'registered at run time')})"
                               for _, plugin in claimants)
            self.conflicts[name] = (
                f"{kind} {name!r} is claimed by {len(claimants)} plugins, {who}, and is given to "
                f"neither; uninstall or rename one of them"
            )
        return table


def _reraise_a_stop(exc: BaseException) -> None:
    """A plugin's exception is its own failure, recorded while the others load, unless it is
    the user stopping the process (Ctrl-C, SIGINT/SIGTERM as Interrupted): that goes on up."""
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        raise exc


_HOOK_FAILURE = "hook: "
_FAILURE_CHARS = 300  # of a broken plugin's error, as kept in Registry.failures


def _checked_specs(result: Any, spec_type: type, kind: str) -> list[Any]:
    """A hook's result, checked: a list or tuple of ``spec_type`` with usable fields."""
    if not isinstance(result, (list, tuple)):
        raise TypeError(f"the {kind} hook returned {type(result).__name__}, not a list of {spec_type.__name__}")
    for spec in result:
        if not isinstance(spec, spec_type):
            raise TypeError(f"the {kind} hook returned a {type(spec).__name__}, not a {spec_type.__name__}")
        if not isinstance(spec.name, str) or not spec.name.isidentifier():
            raise TypeError(f"{kind} name {spec.name!r} is not a lower-case identifier such as 'my_model'")
        if not callable(spec.factory):
            raise TypeError(f"{kind} {spec.name!r}: factory {spec.factory!r} is not callable")
        if isinstance(spec, ModelSpec):
            _check_hyperparameters(spec)
        elif isinstance(spec, LikelihoodSpec):
            spec.options()  # the factory's signature must be readable
        else:
            spec.options()  # the data-set factory's signature must be readable
            _check_splits(spec)
    return list(result)


def _check_hyperparameters(spec: ModelSpec) -> None:
    table = spec.hyperparameters
    if not isinstance(table, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Hyperparameter) for k, v in table.items()
    ):
        raise TypeError(
            f"model {spec.name!r}: hyperparameters must map names to "
            f"pixelgen.blocks.Hyperparameter(default, help)"
        )


def _check_splits(spec: DatasetSpec) -> None:
    splits = spec.splits
    if not (isinstance(splits, tuple) and {"train", "test"} <= set(splits) <= {"train", "val", "test"}):
        raise TypeError(
            f"data set {spec.name!r}: splits must be a tuple of 'train', 'test' and optionally 'val', "
            f"got {splits!r}"
        )


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


_REGISTRY: Registry | None = None


def _load_entry_point(registry: Registry, ep: importlib.metadata.EntryPoint) -> None:
    dist = getattr(ep, "dist", None)
    source = f"distribution {dist.name}" if dist is not None else "an entry point"
    try:
        module = ep.load()
    except BaseException as exc:  # SystemExit or any BaseException at import: record it, go on
        _reraise_a_stop(exc)
        registry.sources[ep.name] = source
        registry.failures[ep.name] = f"{type(exc).__name__}: {one_line(exc, _FAILURE_CHARS)}"
        return
    registry.add(module, ep.name, source)


def get_registry() -> Registry:
    """The process-wide registry, loading every ``pixelgen`` entry point on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry(new_plugin_manager())
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if registry.manager.has_plugin(ep.name) or ep.name in registry.failures:
                continue  # the same distribution seen twice on sys.path
            _load_entry_point(registry, ep)
        registry.collect()
        _REGISTRY = registry
    return _REGISTRY


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (module or instance with hook implementations) at run time.

    Useful in notebooks and tests; installed packages should use the entry-point group.
    """
    registry = get_registry()
    registry.add(plugin, name or repr(plugin), "registered at run time")
    registry.collect()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` and rebuild the tables."""
    registry = get_registry()
    if registry.manager.has_plugin(name):
        registry.manager.unregister(name=name)
    registry.failures.pop(name, None)
    registry.sources.pop(name, None)
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


def list_likelihoods() -> list[str]:
    """Names of every registered likelihood, sorted."""
    return sorted(get_registry().likelihoods)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; :class:`~pixelgen.errors.RegistryError` if none."""
    return _spec(get_registry().models, "model", name)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; :class:`~pixelgen.errors.RegistryError` if none."""
    return _spec(get_registry().datasets, "data set", name)


def get_likelihood_spec(name: str) -> LikelihoodSpec:
    """The :class:`LikelihoodSpec` registered as ``name``; :class:`~pixelgen.errors.RegistryError` if none."""
    return _spec(get_registry().likelihoods, "likelihood", name)


def _spec(table: dict[str, tuple[Any, str]], kind: str, name: str) -> Any:
    """``name``'s spec in one of the registry's name tables, or a RegistryError saying why not."""
    conflicts = get_registry().conflicts
    if name in conflicts:
        raise RegistryError(conflicts[name])
    if name not in table:
        raise RegistryError(
            f"unknown {kind} {name!r}; {did_you_mean(name, table)}available {kind}s: "
            f"{', '.join(sorted(table)) or 'none'}" + _failure_hint()
        )
    return table[name][0]


def plugin_of(name: str) -> str:
    """Name of the plugin that provides model, data set or likelihood ``name``."""
    registry = get_registry()
    entry = registry.models.get(name) or registry.datasets.get(name) or registry.likelihoods.get(name)
    if entry is None:
        raise RegistryError(f"unknown model, data set or likelihood {name!r}")
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
            noun = "hyperparameter" if kind == "model" else "option"
            raise RegistryError(f"{kind} {name!r} has no {noun} {key!r}; available: {listing}")


def create_model(name: str, **hyperparameters: Any):
    """Build the registered model ``name`` with the given hyperparameters.

    A model that declares a ``likelihood`` hyperparameter gets it as a
    :class:`~pixelgen.nn.likelihoods.Likelihood` built by :func:`create_likelihood` (the
    name or table is what the config keeps).

    Returns:
        an ``nn.Module`` mapping integer images ``(B, C, H, W)`` to its likelihood's
        outputs (for the categorical, logits ``(B, 256, C, H, W)``). Its resolved
        hyperparameters are kept in ``model.pixelgen_config = {"name": ...,
        "hyperparameters": {...}}`` so that a checkpoint can rebuild it.
    """
    spec = get_model_spec(name)
    known = spec.defaults()
    check_options("model", name, hyperparameters, known)
    for key, value in hyperparameters.items():  # the rule every model shares (as a recipe's), before any allocation
        declared = spec.hyperparameters.get(key)  # None: a factory's keyword without a declaration
        expected = declared.refuses(value) if declared is not None else None
        if expected is not None:
            raise HyperparameterError(f"model {name!r}: hyperparameter {key}: expected {expected}, got {value!r}")
    resolved = {**known, **hyperparameters}
    built = dict(resolved)
    try:
        if LIKELIHOOD in spec.hyperparameters:
            built[LIKELIHOOD] = create_likelihood(resolved[LIKELIHOOD], resolved.get("n_levels", N_LEVELS))
        model = spec.factory(**built)
    except (ValueError, TypeError) as exc:  # a factory's own check of its hyperparameters (odd kernels, ...)
        raise HyperparameterError(f"model {name!r}: {exc}") from exc
    model.pixelgen_config = {"name": name, "hyperparameters": resolved}
    return model


def create_dataset(name: str, root: str, split: str, **options: Any):
    """Build the registered data set ``name`` for ``split`` under ``root``."""
    spec = get_dataset_spec(name)
    check_options("data set", name, options, spec.options())
    return spec.factory(root=root, split=split, **options)


def likelihood_choice(value: Any) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of a ``likelihood`` hyperparameter: a registered likelihood's name
    (``"logistic_mixture"``) or a table naming it with its options (``{name =
    "logistic_mixture", n_mixtures = 5}``), checked against the registry.

    Raises:
        RegistryError: a value of another form, an unknown name or an unknown option.
    """
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
        options = {key: option for key, option in value.items() if key != "name"}
        name = value["name"]
    else:
        raise RegistryError(
            f"likelihood: expected a registered likelihood's name or a table {{name = ..., options}}, got {value!r}"
        )
    check_options("likelihood", name, options, get_likelihood_spec(name).options())
    return name, options


def create_likelihood(value: Any, n_levels: int = N_LEVELS) -> Any:
    """The :class:`~pixelgen.nn.likelihoods.Likelihood` a model's ``likelihood``
    hyperparameter names (see :func:`likelihood_choice`), for ``n_levels`` values per
    sub-pixel; a value that is neither a name nor a table is taken as a likelihood
    already built (a multi-scale model hands its two networks its own) and returned as
    it is. (The registry imports no torch, so the model checks the type.)

    Raises:
        RegistryError: the value is not a registered likelihood with its options.
        ValueError: the factory refuses them (as a model's factory refuses its values).
    """
    if not isinstance(value, (str, Mapping)):
        return value
    name, options = likelihood_choice(value)
    return get_likelihood_spec(name).factory(n_levels=n_levels, **options)
