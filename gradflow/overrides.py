"""Override strings (`key=value`, as the command line and Hydra give them): their keys and values, the
last of a key given twice, and the run folder name a list of them makes. Text only: no Hydra, no torch."""

from __future__ import annotations

import hashlib
import os
import re

from gradflow.errors import shorten

# --- job names: readable, filesystem-safe, order-independent ------------------------------------
NOT_IN_JOB_NAME = ("name", "results", "device", "threads")  # where and how fast, not what is computed
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")
_HYDRA_ESCAPE = re.compile(r"\\([\\()\[\]{}:=, \t])")  # what Hydra's escape_special_characters escapes
_BOOLEAN = re.compile(r"true|false", re.IGNORECASE)  # an unquoted value Hydra reads as a boolean


def job_name(overrides: list[str] | str) -> str:
    """The run folder name for a list of `key=value` overrides (or Hydra's override_dirname), each key's last."""
    items = split_top(overrides) if isinstance(overrides, str) else list(overrides)
    items = list({override_key(o): o for o in items}.values())  # a key given twice: its last value, which counts
    # (Hydra's override_dirname escapes my:Net as my\:Net: the character escaped, as a command line gives it)
    items = [_readable(_HYDRA_ESCAPE.sub(r"\1", o)) for o in items]
    items = [o[2:] if o.startswith("++") else o for o in items]  # (++k=v sets k as k=v does: one folder for both)
    # (probe.jacobian=True sets what =true does, Hydra reading either as the boolean: one folder for both)
    items = [f"{o.split('=', 1)[0]}={o.split('=', 1)[1].lower()}" if _BOOLEAN.fullmatch(o.partition("=")[2]) else o
             for o in items]
    keep = sorted(o for o in items if o and override_key(o) not in NOT_IN_JOB_NAME and not override_key(o).startswith("hydra"))
    name = _UNSAFE.sub("_", ",".join(keep)) or "default"
    if len(name) > 160:
        name = name[:150] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


_ITEM_START = re.compile(r"[+~]*[A-Za-z_][\w.\-]*=")  # what starts a key=value item of a folder name


def name_items(name: str) -> list[str]:
    """The key=value items of a run folder name (`job_name`'s inverse, as far as a name keeps them), or of a
    run named as typed: split at its commas, where a list's own commas stay in its item. A value that opens
    more brackets than it closes (a name writes [ and ] as _: optim.betas=_0.9 of optim.betas=_0.9,0.99_)
    takes the pieces after it that start no item (0.99_) until it has closed them all. A name cut and
    hashed (job_name's, past 160 characters) keeps its hash as a piece of its own; "default" is one item.
    A quoted value as typed (+tag="x,y") keeps its commas too."""
    items: list[str] = []
    open_, quote = 0, ""  # the brackets the last item's value has opened and not closed; the quote it has
    for piece in name.split(","):
        if items and (open_ > 0 or quote) and not _ITEM_START.match(piece):
            items[-1] += "," + piece
            open_ += _opened(piece)
            quote = "" if quote and piece.endswith(quote) else quote
        else:
            items.append(piece)
            value = piece.partition("=")[2] if "=" in piece else ""
            open_ = _opened(value)
            # (a quoted value typed, +tag="x,y": open until a piece ends with its quote)
            quote = value[0] if value[:1] in ("'", '"') and not (len(value) > 1 and value.endswith(value[0])) else ""
    return items


def _opened(text: str) -> int:
    """How many list brackets (_ in a name; [ ] or { } as typed) `text` opens at its start less those it
    closes at its end."""
    return (len(text) - len(text.lstrip("_[{"))) - (len(text) - len(text.rstrip("_]}")))


def without_item(run: str, key: str) -> str:
    """A run's name without its `key=value` item: `s1/model.activation=tanh,model.depth=2` ->
    `s1/model.activation=tanh`, `xav/model.depth=4` -> `xav`."""
    folder, _, job = run.rpartition("/")
    kept = ",".join(item for item in name_items(job) if not item.startswith(f"{key}="))
    return "/".join(part for part in (folder, kept) if part) or run


def as_in_name(value: str) -> str:
    """A value as a run folder's name writes it ([0.9,0.99] as _0.9,0.99_), to match one typed against it."""
    return _UNSAFE.sub("_", _readable(value))


def point_name(overrides: list[str], swept) -> str:
    """A sweep point's folder name: its overrides of the swept keys alone (the fixed ones are the sweep's)."""
    return job_name([o for o in overrides if override_key(o) in swept])


def split_top(text: str, quotes: bool = False) -> list[str]:
    """Hydra's override_dirname split at its top-level commas: not those inside ${...}, [...] or {...}
    (optim.betas=[0.9,0.99] is one override, whose comma made two and a folder named 0.99_,optim.betas=_0.9);
    with `quotes`, nor inside quotes (a command line's comma list: "a,b",c is two items)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:  # (only with `quotes`)
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif quotes and ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def override_key(override: str) -> str:
    """The key of a `key=value` override, without Hydra's +, ++ and ~ prefixes."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(overrides, key: str) -> str | None:
    """The value the user wrote for `key` (the last override of it counts), or None."""
    given = [o.split("=", 1)[1] for o in overrides if "=" in o and override_key(o) == key]
    return given[-1] if given else None


def as_typed(message: str, overrides) -> str:
    """`message` with each `key=value` it quotes from the config as the override of that key wrote the value,
    where the two are one number: optim.momentum=2 was quoted from the config as optim.momentum=2.0, a value
    of range(0,3) as 1.0 where Hydra lists it as 1. Another value (a string, a list, inf) is left as quoted."""
    for o in overrides:
        if "=" not in o or o.startswith("~"):
            continue
        key, text = override_key(o), o.split("=", 1)[1].strip()

        def typed(m: re.Match) -> str:
            try:
                # (not inf: optim.lr=1e400 is named as the inf it reads as, with why)
                same = m.group(1) != text and float(m.group(1)) == float(text) and abs(float(text)) < float("inf")
            except ValueError:
                same = False
            return f"{key}={text}" if same else m.group(0)

        message = re.sub(rf"(?<![\w.]){re.escape(key)}=([^\s,;:()\[\]]+)", typed, message)
    return message


def last_overrides(overrides) -> list[str]:
    """Each key's last override, where the first of them stood, as Hydra's sweeper keeps a sweep's: Hydra's
    compose applies every override in turn, so train.steps=abc train.steps=5 failed on the replaced abc.
    A key is told with its prefix (+x=1 x=2 adds the key, then sets it)."""
    last = {o.split("=", 1)[0]: o for o in overrides}
    return list(last.values())


HOME_KEYS = ("results", "data.cache", "data.root")  # folders, where ~ is the home folder


def home_expanded(overrides) -> list[str]:
    """The overrides with a folder key's leading ~ read as the home folder (`results="~/runs"`, quoted, or in a
    shell that leaves ~ after =, zsh's): the run went into a folder named ~ in the current one, which pandas then
    read as the home folder's, and the run that had trained ended failed; data.root's was expanded already."""
    def expanded(item: str) -> str:  # one value, quoted or not
        quote = item[0] if len(item) > 1 and item[0] in "'\"" and item[-1] == item[0] else ""
        inner = item[1:-1] if quote else item
        return f"{quote}{os.path.expanduser(inner)}{quote}" if inner.startswith("~") else item

    out = []
    for o in overrides or []:
        key, eq, value = o.partition("=")
        if eq and key.lstrip("+") in HOME_KEYS:  # (each item of a sweep's list: results=~/a,~/b)
            o = f"{key}={','.join(expanded(item) for item in split_top(value, quotes=True))}"
        out.append(o)
    return out


def replaced(overrides: list[str]) -> list[str]:
    """A note for each override that replaces an earlier one of the same key: the last counts, as in Hydra
    (a base command line with a change appended), which the commands say rather than nothing."""
    last: dict[str, str] = {}
    notes = []
    for o in overrides:
        key = override_key(o)
        if last.get(key, o) != o and o.startswith("++") == last[key].startswith("++"):  # (else refused)
            notes.append(f"{shorten(o, 40)} replaces {shorten(last[key], 40)} given before it (the last value of "
                         "a key counts)")
        last[key] = o
    return notes


def _readable(override: str) -> str:
    """optim.lr=${gf.div:0.25,model.depth} -> optim.lr=0.25-over-model.depth, for a folder name."""
    previous = None
    while previous != override:
        previous = override
        override = re.sub(r"\$\{gf\.(\w+):([^${},]*),([^${},]*)\}",
                          lambda m: f"{m[2].strip()}{ARITHMETIC_WORDS.get(m[1], m[1])}{m[3].strip()}", override)
        override = re.sub(r"\$\{([^${}:]+)\}", r"\1", override)
    return override




ARITHMETIC_WORDS = {"add": "+", "sub": "-minus-", "mul": "-times-", "div": "-over-", "pow": "-pow-"}  # gf.* in names
