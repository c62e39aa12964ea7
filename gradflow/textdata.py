"""Token-sequence tasks that need no network: a character-level language model on the documentation
text every Python install ships (`pydoc_data.topics`), and associative recall.

Both are next-token tasks: x (n, T) int64 token ids, y (n, T) int64, y[:, t] the token that follows
x[:, :t+1], or IGNORE where a position is not scored. Pure functions: no printing, no config.
"""

from __future__ import annotations

import torch

from gradflow.errors import GradflowError

IGNORE = -100  # a position without a target (F.cross_entropy's default ignore_index)


def pydoc_text() -> str:
    """The standard library's help topics (the text behind `help('if')`, ~465k characters in CPython 3.11),
    joined in sorted topic order so the text, and hence the split, is the same on every run."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def char_windows(text: str, T: int, test_fraction: float, n_train: int = 0, n_test: int = 0):
    """Next-character windows over `text`: the first (1 - test_fraction) of the characters are the
    training text, the rest the test text (split by position, so no window straddles the two).

    Each split gives n windows of T + 1 characters, evenly spaced over its text (n = 0: every
    non-overlapping window); x is a window's first T characters, y its last T. Returns
    (x_train, y_train, x_test, y_test, vocab) with the vocabulary (sorted characters) of the whole text.
    """
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    cut = int(len(tokens) * (1.0 - test_fraction))
    splits = []
    for part, n in ((tokens[:cut], n_train), (tokens[cut:], n_test)):
        last = len(part) - (T + 1)  # the last window start
        if last < 0:
            raise GradflowError(f"data.T={T} is longer than a split of the text ({len(part)} characters); "
                                "use a smaller data.T or data.test_fraction")
        starts = torch.arange(0, last + 1, T) if n == 0 else torch.linspace(0, last, n).round().long()
        windows = part[starts.unsqueeze(1) + torch.arange(T + 1)]  # (n, T + 1)
        splits += [windows[:, :-1], windows[:, 1:]]
    return (*splits, vocab)


def associative_recall(n: int, pairs: int, queries: int, n_keys: int, n_values: int, generator: torch.Generator):
    """Associative recall (multi-query, as in Arora et al. 2023's MQAR): a sequence lists `pairs` key-value
    pairs with distinct keys, then `queries` keys drawn from them, each followed by its value:

        k_1 v_1 ... k_P v_P  q_1 a_1 ... q_Q a_Q          (length 2P + 2Q; x drops the last token)

    Keys are tokens 0..n_keys-1, values n_keys..n_keys+n_values-1. Only the answers are scored: y is
    a_j at the position of q_j and IGNORE elsewhere, so chance accuracy is 1 / n_values.
    Returns x, y of shape (n, 2P + 2Q - 1) int64 and the vocabulary size n_keys + n_values.
    """
    keys = torch.rand(n, n_keys, generator=generator).argsort(dim=1)[:, :pairs]  # (n, P), distinct per row
    values = n_keys + torch.randint(0, n_values, (n, pairs), generator=generator)  # (n, P)
    which = torch.randint(0, pairs, (n, queries), generator=generator)  # (n, Q): which pair each query asks for
    q, a = keys.gather(1, which), values.gather(1, which)
    seq = torch.cat([torch.stack([keys, values], 2).flatten(1), torch.stack([q, a], 2).flatten(1)], 1)
    x = seq[:, :-1]
    y = torch.full_like(x, IGNORE)
    y[:, 2 * pairs :: 2] = a  # the query positions 2P, 2P + 2, ...: their next token is the answer
    return x, y, n_keys + n_values
