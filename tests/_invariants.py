"""Group-validity invariants shared by the grouping and property tests."""

import numpy as np


def invariant_violations(positions: np.ndarray, nn: np.ndarray, K: int) -> list[str]:
    """Group validity: no duplicate members, and some seed not in the group has every member among its K nearest."""
    problems = []
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, K - 1]  # distance of each point's K-th nearest other point
    for b, members in enumerate(nn):
        if len(set(members.tolist())) != len(members):
            problems.append(f"group {b}: duplicate members {members}")
            continue
        ok = [
            s
            for s in range(len(positions))
            if s not in members and np.all(d[s, members] <= kth[s] * (1 + 1e-6))
        ]
        if not ok:
            problems.append(f"group {b}: no seed has all of {members} among its {K} nearest")
    return problems
