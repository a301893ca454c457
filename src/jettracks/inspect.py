"""``python -m runner inspect FILE``: what a ROOT file holds, as the readers see it.

Prints (rich tables):

1. the file and the detected format with its tree (or why none fits);
2. every tree with its entry count and number of branches;
3. per registered reader: the tree it would read, how many of its required and
   optional branches are present, and which required ones are missing;
4. for the chosen format (detected, or ``--format``): each branch it uses,
   required or optional, present or missing.

Works on local paths and ``root://`` URLs (whatever ``uproot.open`` opens).
Returns 0 when the file is usable (in the detected or the given format), or 1
after one line ``inspect error: ...``: an unreadable or non-ROOT file, an unknown
format name, a file no reader recognises, or one not readable in the given format
(the tables, printed first, say why).
"""

from __future__ import annotations

from typing import Any

__all__ = ["inspect_file"]


def _tree_entries(file: Any, trees: dict[str, set[str]]) -> dict[str, int]:
    out = {}
    for path in trees:
        try:
            out[path] = int(file[path].num_entries)
        except Exception:  # pragma: no cover - a tree uproot lists but cannot open
            out[path] = -1
    return out


def inspect_file(path_or_url: str, *, fmt: str = "auto", console: Any = None, timeout: int = 60) -> int:
    """Describe a ROOT file: detected format, trees and entries, branches per reader.

    Args:
        path_or_url: local path or URL (``root://host//path``).
        fmt: ``auto`` (detect) or a format name to check the file against.
        console: a ``rich.console.Console`` (default: stdout).
        timeout: seconds before a remote open gives up.

    Returns:
        0 when the file is usable in the detected (or given) format; 1 for an
        unreadable file, an unknown format name, a file no reader recognises or
        one not readable in the given format (one line ``inspect error: ...``,
        on stderr when no console is given; the tables, when the file was read,
        on stdout first).
    """
    from rich.console import Console
    from rich.table import Table

    from jettracks import readers
    from jettracks.io.rntuple import is_rntuple
    from jettracks.readers.detect import find_tree, list_trees, open_file

    err_console = console if console is not None else Console(stderr=True)
    console = console or Console()
    registry = {name: readers.reader_class(name) for name in readers.available()}
    if fmt != "auto" and fmt not in registry:
        err_console.print(
            f"inspect error: unknown format {fmt!r}; known: auto, {', '.join(registry)}",
            markup=False, highlight=False, soft_wrap=True,
        )
        return 1
    try:
        with open_file(str(path_or_url), timeout=timeout) as f:
            trees = list_trees(f)
            entries = _tree_entries(f, trees)
            containers = {path: "RNTuple" if is_rntuple(f[path]) else "TTree" for path in trees}
    except readers.ReaderError as err:
        err_console.print(f"inspect error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except Exception as err:  # e.g. a damaged file that opens but cannot be listed
        text = f"{err.__class__.__name__}: {err}".replace("\n", " ")
        err_console.print(
            f"inspect error: {path_or_url}: cannot read: {text}", markup=False, highlight=False, soft_wrap=True
        )
        return 1

    # Which tree every reader would read, and what it misses there.
    rows = []
    detected = None
    for name, cls in registry.items():
        reader = cls()
        tree = find_tree(cls, trees)
        fits = tree is not None
        if tree is None:
            tree = next((p for p in (getattr(cls, "TREES", None) or (cls.treename,)) if p in trees), None)
        available = trees.get(tree, set()) if tree else set()
        required = reader.required_branches()
        optional = reader.optional_branches()
        # A reader may accept several spellings of a branch (Delphes: Jet/Jet.PT or Jet.PT).
        has = getattr(reader, "has_branch", None) or (lambda b, av: b in av)
        rows.append(
            {
                "name": name,
                "reader": reader,
                "tree": tree,
                "fits": fits,
                "required": required,
                "optional": optional,
                "available": {b for b in (*required, *optional) if has(b, available)} | set(available),
                "missing": [b for b in required if not has(b, available)],
            }
        )
        if fits and detected is None:
            detected = name

    from jettracks.io.files import resolve_local

    console.print(f"[bold]file:[/bold] {resolve_local(path_or_url)}", highlight=False)  # local: absolute
    chosen = detected if fmt == "auto" else fmt
    row_of = {r["name"]: r for r in rows}
    if fmt == "auto":
        if detected is None:
            console.print("[bold]format:[/bold] [red]not recognised[/red] by any reader (see the table below)")
        else:
            console.print(
                f"[bold]format:[/bold] [green]{detected}[/green] (detected; tree {row_of[detected]['tree']}, "
                f"{entries.get(row_of[detected]['tree'], 0):,} entries)",
                highlight=False,
            )
    else:
        r = row_of[fmt]
        verdict = "[green]readable[/green]" if r["fits"] else "[red]not readable[/red]"
        detected_txt = detected or "none"
        console.print(
            f"[bold]format:[/bold] {fmt} (given): {verdict}; detected format: {detected_txt}", highlight=False
        )

    t_trees = Table(title="Trees")
    t_trees.add_column("tree", overflow="fold")
    t_trees.add_column("container")
    t_trees.add_column("entries", justify="right")
    t_trees.add_column("branches", justify="right")
    for path in sorted(trees):
        t_trees.add_row(path, containers[path], f"{entries[path]:,}", str(len(trees[path])))
    if not trees:
        t_trees.add_row("(no TTree or RNTuple in the file)", "", "", "")
    console.print(t_trees)

    t_readers = Table(title="Readers")
    t_readers.add_column("format")
    t_readers.add_column("tree", overflow="fold")
    t_readers.add_column("required", justify="right")
    t_readers.add_column("optional", justify="right")
    t_readers.add_column("missing required branches", overflow="fold")
    for r in rows:
        n_req = sum(b in r["available"] for b in r["required"])
        n_opt = sum(b in r["available"] for b in r["optional"])
        if r["tree"] is None:
            tree_txt = f"[red]no {(getattr(type(r['reader']), 'TREES', None) or (r['reader'].treename,))[0]}[/red]"
            missing = "(tree absent)"
        else:
            tree_txt = r["tree"]
            missing = ", ".join(r["missing"]) or "[green]none[/green]"
        mark = " [green]✓[/green]" if r["name"] == chosen and r["fits"] else ""
        t_readers.add_row(
            r["name"] + mark,
            tree_txt,
            f"{n_req}/{len(r['required'])}",
            f"{n_opt}/{len(r['optional'])}",
            missing,
        )
    console.print(t_readers)

    if chosen is not None:
        r = row_of[chosen]
        t_br = Table(title=f"Branches of format {chosen} (tree {r['tree'] or 'absent'})")
        t_br.add_column("branch", overflow="fold")
        t_br.add_column("use")
        t_br.add_column("in file")
        for kind, names in (("required", r["required"]), ("optional", r["optional"])):
            for b in names:
                status = "[green]present[/green]" if b in r["available"] else (
                    "[red]MISSING[/red]" if kind == "required" else "[yellow]absent[/yellow]"
                )
                t_br.add_row(b, kind, status)
        console.print(t_br)
        if r["missing"]:
            console.print(
                f"not readable as format {chosen!r}: missing branches {', '.join(r['missing'])}",
                highlight=False, soft_wrap=True,
            )
    # The tables above say why; the exit status and one line say that the file cannot be used.
    problem = None
    if chosen is None:
        problem = f"no reader recognises this file (trees: {', '.join(sorted(trees)) or 'none'})"
    elif not row_of[chosen]["fits"]:
        missing = row_of[chosen]["missing"]
        problem = f"not readable as format {chosen!r}: " + (
            f"missing branches {', '.join(missing)}" if missing else "no tree it reads"
        )
    if problem is not None:
        err_console.print(
            f"inspect error: {path_or_url}: {problem}", markup=False, highlight=False, soft_wrap=True
        )
        return 1
    return 0
