"""RNTuple input: an RNTuple's fields under the TTree branch names the readers use.

ROOT's RNTuple (TTree's successor; CMS Run-4 NanoAOD) is read by uproot 5.7 and by
coffea's ``NanoEventsFactory.from_root`` (``mode="virtual"``, ``BaseSchema``): both take an
RNTuple where they take a TTree. What differs is the *layout* of a collection:

- a TTree stores a collection as flat branches and a counter: ``nJet`` + ``Jet_pt``
  (NanoAOD), ``Jet_size`` + ``Jet/Jet.PT`` (Delphes' split ``TClonesArray``);
- an RNTuple stores it as one field, a vector of records: ``Jet`` with members ``pt``
  (CMSSW's ``NanoAODRNTupleOutputModule`` writes ``std::vector<record>`` fields named
  after the table, with no counter field), or ``Jet`` with ``PT`` (a Delphes-like
  RNTuple); uproot lists the members as ``Jet.pt``. Under ``BaseSchema`` such a
  field is one record field ``Jet``.

:func:`alias_map` gives every top-level field its own name, plus, for a field that
is a (vector of) record(s), the TTree spellings of each member path ``m``:
``C_m``, ``C.m``, ``C/C.m``, and for a vector the counters ``nC`` (CMS style, first
letter capitalised: ``nJet``, ``nPFCands``) and ``C_size`` (Delphes). A real field of
that name always wins. An RNTuple written with the TTree's flat names (``Jet_pt``
as ``std::vector<float>``, ``nJet``) maps to itself.

:func:`field_view` wraps the chunk's NanoEvents so a reader asks for ``Jet_pt`` and
gets ``events["Jet"]["pt"]`` (virtual arrays stay lazy; a counter is
``ak.num`` of the collection). :func:`top_fields` turns the branches a run reads
into the RNTuple fields to load (``iteritems_options``' ``filter_name``).

Cost: coffea reads an RNTuple per top-level field, so touching ``Jet_pt`` of a
collection field reads every member of ``Jet``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "RNTUPLE_CLASSES",
    "FieldView",
    "alias_map",
    "branch_names",
    "field_view",
    "is_rntuple",
    "top_fields",
]

#: Class names uproot lists for an RNTuple anchor (``file.classnames()``).
RNTUPLE_CLASSES = ("ROOT::RNTuple", "ROOT::Experimental::RNTuple")

#: alias -> (path of field names from the top, is a counter)
Aliases = dict[str, tuple[tuple[str, ...], bool]]


def is_rntuple(obj: Any) -> bool:
    """True for an uproot RNTuple object (``file["Events"]`` of an RNTuple)."""
    try:
        from uproot.behaviors.RNTuple import HasFields
    except ImportError:  # pragma: no cover - uproot < 5.4
        return False
    return isinstance(obj, HasFields)


def _counter(name: str) -> str:
    return "n" + name[:1].upper() + name[1:]


def _unwrap(form: Any) -> tuple[Any, bool]:
    """``(inner form, is a list)``: option/indexed wrappers and one list level removed."""
    import awkward as ak

    is_list = False
    while True:
        if isinstance(form, (ak.forms.IndexedOptionForm, ak.forms.IndexedForm, ak.forms.UnmaskedForm,
                             ak.forms.ByteMaskedForm, ak.forms.BitMaskedForm)):
            form = form.content
        elif not is_list and isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm,
                                               ak.forms.RegularForm)):
            if form.parameters.get("__array__") in ("string", "bytestring"):
                return form, False
            form, is_list = form.content, True
        else:
            return form, is_list


def _member_paths(form: Any, prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    """Paths to the leaves of a record form (through nested records, not through lists)."""
    import awkward as ak

    for name, content in zip(form.fields, form.contents):
        inner, is_list = _unwrap(content)
        if isinstance(inner, ak.forms.RecordForm) and not is_list and not inner.is_tuple:
            yield from _member_paths(inner, (*prefix, name))
        else:
            yield (*prefix, name)


def alias_map(form: Any) -> Aliases:
    """TTree-style names -> field paths for an RNTuple's top-level record form (see module doc)."""
    import awkward as ak

    out: Aliases = {}
    for name in form.fields:  # real fields first: they win over any alias
        out[name] = ((name,), False)
    for name, content in zip(form.fields, form.contents):
        inner, is_list = _unwrap(content)
        if not isinstance(inner, ak.forms.RecordForm) or inner.is_tuple:
            continue
        if is_list:
            out.setdefault(_counter(name), ((name,), True))
            out.setdefault(f"{name}_size", ((name,), True))
        for path in _member_paths(inner):
            dotted = ".".join(path)
            full = (name, *path)
            for alias in (f"{name}_{'_'.join(path)}", f"{name}.{dotted}", f"{name}/{name}.{dotted}"):
                out.setdefault(alias, (full, False))
    return out


def _form_of(rntuple: Any) -> Any:
    form = rntuple.to_akform()
    return form[0] if isinstance(form, tuple) else form


def branch_names(rntuple: Any) -> set[str]:
    """Every name a reader may ask of this RNTuple (fields and their TTree spellings)."""
    return set(alias_map(_form_of(rntuple)))


def top_fields(rntuple: Any, branches: Iterable[str] | None) -> list[str] | None:
    """The top-level fields holding ``branches`` (names as in :func:`alias_map`); ``None``: all.

    Names that resolve to nothing are left out (the reader then names them missing).
    """
    if branches is None:
        return None
    aliases = alias_map(_form_of(rntuple))
    return sorted({aliases[b][0][0] for b in branches if b in aliases})


class FieldView:
    """A chunk's NanoEvents seen with TTree names (what readers and processors index).

    ``view[name]``, ``view.name``, ``view.fields``, ``view.metadata``, ``len(view)``
    (events) and ``name in view`` work as on the events; ``view.events`` is the
    underlying NanoEvents array.
    """

    def __init__(self, events: Any, aliases: Aliases) -> None:
        self.events = events
        self._aliases = aliases

    @property
    def fields(self) -> list[str]:
        return list(self._aliases)

    def keys(self) -> list[str]:
        return self.fields

    @property
    def metadata(self) -> Any:
        return self.events.metadata

    def __len__(self) -> int:
        return len(self.events)

    def __contains__(self, name: object) -> bool:
        return name in self._aliases

    def __getitem__(self, name: str) -> Any:
        import awkward as ak

        try:
            path, is_counter = self._aliases[name]
        except (KeyError, TypeError):
            return self.events[name]  # raises awkward's own "no field" error
        out = self.events
        for part in path:
            out = out[part]
        return ak.num(out, axis=1) if is_counter else out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "events":
            raise AttributeError(name)
        if name in self._aliases:
            return self[name]
        return getattr(self.events, name)


def field_view(events: Any) -> FieldView:
    """:class:`FieldView` of a chunk's NanoEvents (``BaseSchema``) read from an RNTuple."""
    import awkward as ak

    form = events.layout.form if hasattr(events, "layout") else ak.to_layout(events).form
    return FieldView(events, alias_map(form))
