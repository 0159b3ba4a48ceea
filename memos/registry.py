"""The plugin registry: loads the `memos.plugins` entry points on first use and keeps what they register.

Nothing is imported until something asks for a registered name (or `memos plugins list` runs), so
`memos --help` never pays for plugins. `MEMOS_PLUGINS` (comma-separated entry-point names, or
`none`) limits which plugins load. A plugin that fails, on import or inside a register hook, is
recorded with its error and skipped, and none of its registrations are kept; the others still load.
A name registered twice for the same kind keeps the first and records the conflict.

    from memos.registry import get_registry

    policy = get_registry().policy("heuristic")
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pluggy

from memos.errors import BackendError, MemosError, UserError
from memos.hooks import PROJECT, Spec

if TYPE_CHECKING:
    from memos.policy import Policy

#: the entry-point group plugins are found in
GROUP = "memos.plugins"
#: the environment variable that limits which plugins load
ENV = "MEMOS_PLUGINS"
#: the distribution whose plugins load first, so a built-in name always wins over a third party's
CORE_DIST = "memos"
#: what a registered name may look like: it is typed by users and used as a scheme before ':'
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REGISTER_PREFIX = "memos_register_"
#: the kinds a plugin can register, one per `memos_register_<kind>` hook in the contract
KINDS: tuple[str, ...] = tuple(
    name.removeprefix(_REGISTER_PREFIX) for name in vars(Spec) if name.startswith(_REGISTER_PREFIX)
)


class PluginStatus(StrEnum):
    """What became of a plugin."""

    loaded = "loaded"
    failed = "failed"
    #: not named in MEMOS_PLUGINS, so never imported
    disabled = "disabled"


@dataclass(frozen=True)
class Registration:
    """One `register(name, obj)` call a plugin made that was kept."""

    kind: str
    name: str
    obj: Any
    plugin: str


@dataclass(frozen=True)
class NameConflict:
    """A name registered twice for one kind: the first registration stays, the later one is ignored."""

    kind: str
    name: str
    #: the plugin whose registration stays ("memos" for a name memos builds itself)
    kept: str
    ignored: str


@dataclass
class PluginInfo:
    """One plugin: where it comes from, whether it loaded, and what it registered."""

    name: str
    #: the distribution that provides it, "NAME VERSION" ("-" when unknown)
    source: str
    #: the entry point's value, e.g. "memos.policies.heuristic"
    value: str
    status: PluginStatus
    #: why it failed, on one line
    error: str | None = None
    registered: list[Registration] = field(default_factory=list)

    def names(self) -> dict[str, list[str]]:
        """What it registered: kind -> names, in registration order."""
        out: dict[str, list[str]] = {}
        for item in self.registered:
            out.setdefault(item.kind, []).append(item.name)
        return out


def allowed_plugins(value: str | None) -> frozenset[str] | None:
    """The MEMOS_PLUGINS value as a set of plugin names; None (unset or empty) allows every plugin."""
    if value is None or not value.strip():
        return None
    names = {part.strip() for part in value.split(",") if part.strip()}
    if {name.lower() for name in names} == {"none"}:
        return frozenset()
    return frozenset(names)


def _builtin_names() -> dict[str, tuple[str, ...]]:
    """The schemes memos builds itself; a plugin cannot take them over."""
    from memos.embed import BUILTIN_SCHEMES as embedders
    from memos.llm import BUILTIN_SCHEMES as llm_backends

    return {"llm_backends": llm_backends, "embedders": embedders}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _source(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "-"


def _load_order(entry_point: metadata.EntryPoint) -> tuple[bool, str, str]:
    dist = entry_point.dist.name.lower() if entry_point.dist is not None else ""
    return (dist != CORE_DIST, dist, entry_point.name)


class Registry:
    """What the installed plugins registered, loaded on first use; one per process via `get_registry()`."""

    def __init__(
        self,
        allow: Collection[str] | None = None,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
    ) -> None:
        #: plugin names allowed to load; None: all
        self.allow = None if allow is None else frozenset(allow)
        # None: read the installed entry points when loading
        self._entry_points = None if entry_points is None else list(entry_points)
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(Spec)
        # invariant: each name maps to the first kept registration of that kind; every kind is a key
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        #: every plugin seen, in load order (disabled ones included)
        self._plugins: list[PluginInfo] = []
        #: names registered twice, in the order the second registration came
        self._conflicts: list[NameConflict] = []
        # invariant: _loading is set (under the lock) when loading starts and _loaded when it ends; a
        # plugin that asks the registry for something while loading sees what is registered so far
        self._loading = False
        self._loaded = False
        self._lock = threading.RLock()

    # ---- what was registered -----------------------------------------------------------------

    def _kind(self, kind: str) -> Mapping[str, Any]:
        self._ensure_loaded()
        return MappingProxyType({name: item.obj for name, item in self._by_kind[kind].items()})

    @property
    def policies(self) -> Mapping[str, Any]:
        """Policy factories by name: factory() -> memos.policy.Policy."""
        return self._kind("policies")

    @property
    def llm_backends(self) -> Mapping[str, Any]:
        """LLM backend factories by scheme: factory(settings, arg) -> memos.llm.LLM."""
        return self._kind("llm_backends")

    @property
    def embedders(self) -> Mapping[str, Any]:
        """Embedder factories by scheme: factory(settings, arg) -> memos.embed.Embedder."""
        return self._kind("embedders")

    @property
    def vector_stores(self) -> Mapping[str, Any]:
        """Vector store factories by scheme: factory(settings, url) -> a vector index."""
        return self._kind("vector_stores")

    @property
    def agents(self) -> Mapping[str, Any]:
        """Agent factories by name: factory(session, **options) -> an agent."""
        return self._kind("agents")

    @property
    def tools(self) -> Mapping[str, Any]:
        """Tools agents may call, by name."""
        return self._kind("tools")

    @property
    def cli_commands(self) -> Mapping[str, Any]:
        """CLI commands by name (typer apps or functions), run as `memos NAME`."""
        return self._kind("cli_commands")

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, in load order, with its status and what it registered."""
        self._ensure_loaded()
        return list(self._plugins)

    @property
    def conflicts(self) -> list[NameConflict]:
        """Names registered more than once for one kind (the first stays)."""
        self._ensure_loaded()
        return list(self._conflicts)

    @property
    def hook(self) -> Any:
        """The event hooks of the loaded plugins, e.g. `registry.hook.memos_on_write(user=..., cubes=...)`."""
        self._ensure_loaded()
        return self._pm.hook

    def registration(self, kind: str, name: str) -> Registration | None:
        """The kept registration of a name, with the plugin that made it."""
        if kind not in self._by_kind:
            raise UserError(f"unknown plugin kind {kind!r}: use one of {', '.join(KINDS)}")
        self._ensure_loaded()
        return self._by_kind[kind].get(name)

    # ---- building what was registered -------------------------------------------------------

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under a name; a plugin's own failure becomes a BackendError naming it."""
        item = self.registration(kind, name)
        if item is None:
            raise UserError(f"no {kind.replace('_', ' ')} named {name!r} is registered")
        try:
            return item.obj(*args, **kwargs)
        except MemosError:
            raise
        except Exception as exc:
            raise BackendError(
                f"plugin {item.plugin!r} failed to build {name!r}: {_one_line(exc)}", plugin=item.plugin
            ) from exc

    def policy(self, name: str) -> Policy:
        """A new instance of the policy registered under `name`; UserError listing the others when unknown."""
        from memos.policy import Policy

        if name not in self.policies:
            available = ", ".join(sorted(self.policies)) or "none (no plugin registers one)"
            raise UserError(
                f"unknown policy {name!r}: available policies are {available}; `memos plugins list` shows the plugins",
                policy=name,
            )
        policy = self.create("policies", name)
        if not isinstance(policy, Policy):
            plugin = self._by_kind["policies"][name].plugin
            raise BackendError(
                f"plugin {plugin!r} registered policy {name!r} as a factory of "
                f"{type(policy).__name__}, not of a memos.policy.Policy",
                plugin=plugin,
            )
        if not policy.name:
            policy.name = name
        return policy

    # ---- loading ------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        # another thread waits here until loading is done; the loading thread itself re-enters
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                self._load_all()
            finally:
                self._loaded = True

    def _load_all(self) -> None:
        entry_points = self._entry_points
        if entry_points is None:
            entry_points = list(metadata.entry_points(group=GROUP))
        reserved = _builtin_names()
        found: set[str] = set()
        for entry_point in sorted(entry_points, key=_load_order):
            found.add(entry_point.name)
            info = PluginInfo(entry_point.name, _source(entry_point), entry_point.value, PluginStatus.loaded)
            self._plugins.append(info)
            if self.allow is not None and entry_point.name not in self.allow:
                info.status = PluginStatus.disabled
                continue
            self._load_one(entry_point, info, reserved)
        for name in sorted((self.allow or set()) - found):
            error = f"{ENV} names it, but no installed package has a {GROUP} entry point of that name"
            self._plugins.append(PluginInfo(name, "-", "-", PluginStatus.failed, error))

    def _load_one(
        self, entry_point: metadata.EntryPoint, info: PluginInfo, reserved: Mapping[str, Collection[str]]
    ) -> None:
        name = entry_point.name
        try:
            plugin = entry_point.load()
        except Exception as exc:
            self._fail(info, f"importing {entry_point.value}: {_one_line(exc)}")
            return
        if self._pm.has_plugin(name):
            self._fail(info, f"another plugin is already named {name!r}; rename one of the entry points")
            return
        try:
            self._pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(info, _one_line(exc))
            return
        # a misspelt hook would otherwise be silently never called
        unknown = [
            caller.name
            for caller in self._pm.get_hookcallers(plugin) or []
            if caller.spec is None
            and any(not impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin)
        ]
        if unknown:
            self._pm.unregister(plugin)
            self._fail(info, f"implements {', '.join(unknown)}, which memos does not define")
            return
        staged: list[Registration] = []
        for kind in KINDS:
            error = self._call_register_hook(kind, plugin, name, staged)
            if error is not None:
                self._pm.unregister(plugin)
                self._fail(info, f"in {_REGISTER_PREFIX}{kind}: {error}")
                return
        for item in staged:
            self._keep(item, info, reserved)

    def _call_register_hook(self, kind: str, plugin: object, name: str, staged: list[Registration]) -> str | None:
        """Run one plugin's register hook for a kind, staging its registrations; the error on one line, if any."""

        def register(item_name: str, obj: Any) -> None:
            if not isinstance(item_name, str) or not _NAME.fullmatch(item_name):
                raise UserError(
                    f"cannot register {item_name!r}: a name is letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit"
                )
            if obj is None:
                raise UserError(f"cannot register {item_name!r} as None")
            staged.append(Registration(kind, item_name, obj, name))

        caller = getattr(self._pm.hook, _REGISTER_PREFIX + kind)
        # called plugin by plugin (not through the hook) so a failure is pinned on the plugin that
        # raised, and the other plugins' registrations still happen
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin or impl.hookwrapper or impl.wrapper:
                continue
            args = {"register": register}
            try:
                impl.function(*(args[arg] for arg in impl.argnames))
            except Exception as exc:
                return _one_line(exc)
        return None

    def _keep(self, item: Registration, info: PluginInfo, reserved: Mapping[str, Collection[str]]) -> None:
        if item.name in reserved.get(item.kind, ()):
            self._conflicts.append(NameConflict(item.kind, item.name, CORE_DIST, item.plugin))
            return
        first = self._by_kind[item.kind].get(item.name)
        if first is not None:
            self._conflicts.append(NameConflict(item.kind, item.name, first.plugin, item.plugin))
            return
        self._by_kind[item.kind][item.name] = item
        info.registered.append(item)

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.status = PluginStatus.failed
        info.error = error


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, honouring MEMOS_PLUGINS as it was when first asked for."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry(allow=allowed_plugins(os.environ.get(ENV)))
        return _registry


def reset_registry() -> None:
    """Forget the process-wide registry, so the next `get_registry()` reads the plugins (and MEMOS_PLUGINS) again."""
    global _registry
    with _registry_lock:
        _registry = None
