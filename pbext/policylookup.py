# -*- test-case-name: tests.test_security -*-
"""
Finding the security policy an operator names: a preset, an installed
policy plugin, a dotted name or a policy file.

C{twistd pbserver --policy NAME} and a factory's C{policy="NAME"} come
here (L{loadPolicy}); C{--help-policies} lists what can be found by name
(L{describePolicies}).  Policy plugins are L{IPolicyPlugin} providers in
any installed package's C{twisted/plugins/} directory, found with
L{twisted.plugin.getPlugins}; pbext's own presets are offered the same
way (C{twisted/plugins/pbext_policies.py}).

@since: pbext NEXT
"""

from __future__ import annotations

import os
import types
from typing import Any, Iterable, Mapping

from twisted.python.reflect import namedAny

from pbext.interfaces import IPolicyPlugin, ISecurityPolicy
from pbext.policyfile import loadPolicyFile
from pbext.security import PolicyError, presets

__all__ = ["describePolicies", "loadPolicy"]

_PRESET_DESCRIPTIONS: Mapping[str, str] = types.MappingProxyType(
    {
        "classic": "Stock PB behaviour: any dotted type name passes to jelly's "
        "module/class checks, private methods callable, no extra limits.",
        "default": "Closed type allowlist (PB types, registries, "
        "pb.setUnjellyableForClass), no imports, generous limits.",
        "strict": "Only PB and registry types, tighter limits, timeouts and "
        "an idle timeout.",
    }
)


def _installedPolicyPlugins() -> Iterable[Any]:
    """
    The L{IPolicyPlugin} providers installed as C{twisted.plugins} dropins.
    """
    from twisted.plugin import getPlugins

    return getPlugins(IPolicyPlugin)


def _asPolicy(candidate: object, source: str) -> Any:
    """
    Return C{candidate} if it is a policy, else raise L{PolicyError}.
    """
    if not ISecurityPolicy.providedBy(candidate):
        raise PolicyError(
            f"{source} gave {candidate!r}, which does not provide "
            f"pbext.interfaces.ISecurityPolicy; make it give a "
            f"pbext.security.SecurityPolicy"
        )
    return candidate


def _isDottedName(spec: str) -> bool:
    parts = spec.split(".")
    return len(parts) > 1 and all(part.isidentifier() for part in parts)


#: What L{_fromPlugins} returns when no plugin has the name.
_NOT_FOUND = object()


def _fromPlugins(spec: str, plugins: Iterable[Any]) -> Any:
    """
    The policy of the plugin named C{spec}, or L{_NOT_FOUND}.
    """
    for plugin in plugins:
        if getattr(plugin, "name", None) == spec:
            try:
                policy = plugin.load()
            except PolicyError:
                raise
            except Exception as e:
                raise PolicyError(f"policy plugin {spec!r} failed to load: {e}") from e
            return _asPolicy(policy, f"policy plugin {spec!r}")
    return _NOT_FOUND


def _fromObject(spec: str, found: object) -> Any:
    """
    The policy C{found} (what the dotted name C{spec} names) is or builds.
    """
    if ISecurityPolicy.providedBy(found):
        return found
    if not callable(found):
        raise PolicyError(
            f"{spec} is {found!r}: neither a security policy nor a "
            f"callable returning one"
        )
    try:
        built = found()
    except Exception as e:
        raise PolicyError(f"calling {spec}() failed: {e}") from e
    return _asPolicy(built, f"{spec}()")


# Returns Any, not ISecurityPolicy (what it is): pbext.factorystate's
# policyFrom returns this result as a SecurityPolicy, which a plugin's
# policy need not be; that module has to change before this can.
def loadPolicy(spec: str, plugins: Iterable[IPolicyPlugin] | None = None) -> Any:
    """
    Find or build the security policy an operator named.

    C{spec} is tried, in order, as:
      1. a preset name (L{presets<pbext.security.presets>}: C{classic},
         C{default}, C{strict});
      2. the name of an installed L{IPolicyPlugin};
      3. a dotted name (L{namedAny}) of a policy object, or of a
         zero-argument callable returning one;
      4. the path of a policy file (see L{pbext.policyfile}).

    Also importable as C{pbext.security.loadPolicy} and
    C{pbext.loadPolicy}.

    @param spec: What the operator gave, e.g. to C{--policy}.
    @param plugins: The L{IPolicyPlugin} providers to consider; by default
        those installed (L{twisted.plugin.getPlugins}).

    @return: An L{ISecurityPolicy} provider.  Presets, plugins and files
        build a fresh object on every call.

    @raise PolicyError: If C{spec} names nothing usable, or what it names
        fails to build a policy; the message says why.
    @since: pbext NEXT
    """
    if spec in presets:
        return presets[spec]()
    if plugins is None:
        plugins = _installedPolicyPlugins()
    policy = _fromPlugins(spec, plugins)
    if policy is not _NOT_FOUND:
        return policy
    importProblem = None
    if _isDottedName(spec):
        try:
            found = namedAny(spec)
        except Exception as e:
            importProblem = f"{type(e).__name__}: {e}"
        else:
            return _fromObject(spec, found)
    if os.path.isfile(spec):
        return loadPolicyFile(spec)
    asDotted = (
        f"not importable as a dotted name ({importProblem})"
        if importProblem is not None
        else "not a dotted name"
    )
    raise PolicyError(
        f"unknown security policy {spec!r}: not a preset ({', '.join(presets)}), "
        f"not an installed policy plugin (see --help-policies), {asDotted}, "
        f"and not an existing policy file"
    )


def describePolicies(
    plugins: Iterable[IPolicyPlugin] | None = None,
) -> list[tuple[str, str]]:
    """
    The policies L{loadPolicy} can find by name: the presets, then the
    installed plugins (sorted by name; a plugin named like a preset is
    hidden by it).

    @param plugins: The L{IPolicyPlugin} providers to list; by default
        those installed.
    @return: C{(name, description)} pairs.
    @since: pbext NEXT
    """
    described = [(name, _PRESET_DESCRIPTIONS[name]) for name in presets]
    if plugins is None:
        plugins = _installedPolicyPlugins()
    extra = {}
    for plugin in plugins:
        name = getattr(plugin, "name", None)
        if isinstance(name, str) and name not in presets and name not in extra:
            extra[name] = str(getattr(plugin, "description", ""))
    described.extend(sorted(extra.items()))
    return described
