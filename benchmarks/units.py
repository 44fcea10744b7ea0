"""Units: how byte counts and seconds are written in the Markdown and the progress lines."""


def fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "—"
    if abs(b) < 2**20:
        return f"{b / 1024:.0f} KiB"
    if abs(b) < 2**30:
        return f"{b / 2**20:.0f} MiB"
    return f"{b / 2**30:.2f} GiB"
