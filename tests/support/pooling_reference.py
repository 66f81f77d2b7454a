"""Brute-force NumPy references of the directional pooling and its gradient."""

import numpy as np


def brute_force(x, direction):
    """Double loop over every output position: max over its scanned range."""
    b, h, w, c = x.shape
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            if direction == "top":
                region = x[:, i:, j, :]
            elif direction == "bottom":
                region = x[:, : i + 1, j, :]
            elif direction == "left":
                region = x[:, i, j:, :]
            else:
                region = x[:, i, : j + 1, :]
            out[:, i, j, :] = region.max(axis=1)
    return out


def brute_force_grad(x, upstream, direction):
    """Gradient to the argmax; ties go to the position nearest the scan start.

    The scan starts at the far border: the last row for top pooling, the first
    row for bottom pooling, the last column for left pooling, the first column
    for right pooling.
    """
    b, h, w, c = x.shape
    grad = np.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    if direction == "top":
                        rows = list(range(h - 1, i - 1, -1))  # from the scan start
                        values = [x[n, r, j, ch] for r in rows]
                        k = rows[int(np.argmax(values))]
                        grad[n, k, j, ch] += upstream[n, i, j, ch]
                    elif direction == "bottom":
                        rows = list(range(0, i + 1))
                        values = [x[n, r, j, ch] for r in rows]
                        k = rows[int(np.argmax(values))]
                        grad[n, k, j, ch] += upstream[n, i, j, ch]
                    elif direction == "left":
                        cols = list(range(w - 1, j - 1, -1))
                        values = [x[n, i, q, ch] for q in cols]
                        k = cols[int(np.argmax(values))]
                        grad[n, i, k, ch] += upstream[n, i, j, ch]
                    else:
                        cols = list(range(0, j + 1))
                        values = [x[n, i, q, ch] for q in cols]
                        k = cols[int(np.argmax(values))]
                        grad[n, i, k, ch] += upstream[n, i, j, ch]
    return grad
