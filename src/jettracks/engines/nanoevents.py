"""A chunk's NanoEvents as coffea's ``NanoEventsFactory.from_root(mode="virtual")`` builds them,
with the tree's base form built once per open tree instead of once per chunk.

``from_root`` walks every (filtered) branch of the tree for each chunk -- its type name,
interpretation and awkward form (``typenames()`` and ``_extract_base_form``): about half of
a no-op chunk. The form depends only on the tree and the branch filter, and a file stays
open for all its chunks in a worker (:mod:`jettracks.engines.handles`), so it is kept here,
keyed by the open tree object (a weak reference: a closed file's tree is not kept alive) and
the filter, as JSON (each chunk gets its own copy: coffea writes the chunk's metadata into
it). The rest is ``from_root``'s own virtual-mode code path, with its classes: the same
mapping, partition key and schema, hence the same events.

TTrees only; an RNTuple goes through ``from_root`` unchanged.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["MAX_FORMS", "chunk_events"]

#: Base forms kept per process (least recently used dropped first).
MAX_FORMS = 16

_FORMS: OrderedDict[tuple[int, str], tuple[weakref.ref, str]] = OrderedDict()
_LOCK = threading.Lock()


def _base_form(tree: Any, iteritems_options: dict[str, Any]) -> dict[str, Any]:
    from coffea.nanoevents.mapping.uproot import UprootSourceMapping

    key = (id(tree), repr(sorted((k, repr(v)) for k, v in iteritems_options.items())))
    with _LOCK:
        hit = _FORMS.get(key)
        if hit is not None and hit[0]() is tree:
            _FORMS.move_to_end(key)
            return json.loads(hit[1])
    base = UprootSourceMapping._extract_base_form(tree, iteritems_options=iteritems_options)
    base["typenames"] = tree.typenames()
    text = json.dumps(base)
    with _LOCK:
        _FORMS[key] = (weakref.ref(tree), text)
        _FORMS.move_to_end(key)
        while len(_FORMS) > MAX_FORMS:
            _FORMS.popitem(last=False)
    return json.loads(text)


def chunk_events(rootfile: Any, treename: str, *, entry_start: int, entry_stop: int, metadata: dict[str, Any],
                 iteritems_options: dict[str, Any], schemaclass: Any = None) -> Any:
    """The events of entries ``[entry_start, entry_stop)`` of ``rootfile[treename]`` (an open
    uproot directory), as ``NanoEventsFactory.from_root(rootfile, treepath=treename,
    schemaclass=schemaclass (BaseSchema), metadata=metadata, mode="virtual", entry_start=...,
    entry_stop=..., iteritems_options=...).events()``."""
    from coffea.nanoevents import BaseSchema, NanoEventsFactory
    from coffea.nanoevents.mapping.uproot import TrivialUprootOpener, UprootSourceMapping

    tree = rootfile[treename]
    if entry_start is None or entry_start < 0:
        entry_start = 0
    if entry_stop is None or entry_stop > tree.num_entries:
        entry_stop = tree.num_entries
    partition_key = (str(tree.file.uuid), tree.object_path, f"{entry_start}-{entry_stop}")
    mapping = UprootSourceMapping(
        TrivialUprootOpener({partition_key[0]: tree.file.file_path}, {}),
        entry_start,
        entry_stop,
        cache={},
        access_log=None,
        file_handle=rootfile,
        use_ak_forth=True,
        virtual=True,
        decompression_executor=None,
        interpretation_executor=None,
        preloaded_arrays=None,
        buffer_cache=None,
    )
    mapping.preload_column_source(partition_key[0], partition_key[1], tree)
    factory = NanoEventsFactory._from_mapping(
        mapping, partition_key, _base_form(tree, iteritems_options), schemaclass or BaseSchema, metadata,
        mode="virtual",
    )
    return factory.events()
