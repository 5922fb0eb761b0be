"""Packed, length-sorted layout of padded sequences, for recurrences without wasted steps.

``Steps.of(mask)`` moves each row's real positions to the front (padding may sit anywhere),
sorts rows by length (longest first) and records ``counts[t]`` = rows still running at step
``t``. ``pack`` turns a (B, T, ...) tensor into (N, ...) rows, time-major (all rows of step 0,
then step 1, ...; within a step in sorted row order, as torch's PackedSequence), and
``split`` cuts such packed rows into per-step views (counts[t], ...). A recurrence over
shrinking prefixes then does no work for padding and never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prev_index(counts: list[int], device: torch.device) -> torch.Tensor:
    """Packed index of the element one step earlier in the same row, for every element after
    step 0 (packed rows counts[0]..N-1, in order; rows keep their rank from step to step)."""
    c = torch.tensor(counts, device=device)
    n0, total = counts[0], int(c.sum())
    shift = torch.repeat_interleave(c[:-1], c[1:])  # (N - n0,) rows of the previous step
    return torch.arange(n0, total, device=device) - shift


@dataclass
class Steps:
    """Index of the packed layout of one batch."""

    order: torch.Tensor  # (B,) row ids sorted by length, longest first
    rows: torch.Tensor  # (N,) original row of each packed element
    cols: torch.Tensor  # (N,) original position of each packed element
    steps: torch.Tensor  # (N,) step t (0-based rank among the row's real positions)
    counts: list[int]  # rows running at each step; empty when no row has a real position

    @staticmethod
    def of(mask: torch.Tensor) -> Steps:
        lengths = mask.sum(dim=1)  # (B,)
        width = max(int(lengths.max()), 1) if mask.numel() else 1
        positions = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,)
        sorted_len = lengths[order]  # (B,)
        t = torch.arange(width, device=mask.device)
        valid = t.unsqueeze(1) < sorted_len.unsqueeze(0)  # (T', B) time-major
        rows = order.unsqueeze(0).expand(width, -1)[valid]  # (N,)
        cols = positions[order].T[valid]  # (N,)
        steps = t.unsqueeze(1).expand(-1, len(order))[valid]  # (N,)
        counts = [c for c in valid.sum(dim=1).tolist() if c > 0]
        return Steps(order, rows, cols, steps, counts)

    @property
    def width(self) -> int:
        return len(self.counts)

    def pack(self, seq: torch.Tensor) -> torch.Tensor:
        """Packed rows (N, ...) of a (B, T, ...) tensor."""
        flat = seq.reshape(seq.shape[0] * seq.shape[1], *seq.shape[2:])  # (B * T, ...)
        return flat.index_select(0, self.rows * seq.shape[1] + self.cols)

    def rows_of(self, per_row: torch.Tensor) -> torch.Tensor:
        """(N, ...) copies of per-row values (B, ...) for each packed element."""
        return per_row.index_select(0, self.rows)

    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Per-step views (counts[t], ...) of packed rows (N, ...)."""
        return list(packed.split(self.counts))

    def per_row(self, packed: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """(B, T') with packed scalars (N,) at (row, step) and ``fill`` elsewhere."""
        b, t = len(self.order), max(self.width, 1)
        out = packed.new_full((b * t,), fill)
        return out.index_copy(0, self.rows * t + self.steps, packed).reshape(b, t)

    def from_rows(self, full: torch.Tensor) -> torch.Tensor:
        """Packed values (N,) read back from a (B, T') tensor laid out as ``per_row``."""
        return full.reshape(-1).index_select(0, self.rows * full.shape[1] + self.steps)

    def successors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed indices (h_idx, next_idx) of every element whose row has a next step.

        Derived from the rows and steps in general; in this layout they equal
        ``(prev_index(counts), arange(counts[0], N))`` (tested), which the hot paths use.
        """
        counts = torch.tensor([*self.counts, 0], device=self.rows.device)
        offsets = torch.cumsum(counts, 0) - counts  # (T'+1,)
        rank = torch.arange(len(self.rows), device=self.rows.device) - offsets[self.steps]
        has_next = rank < counts[self.steps + 1]
        idx = torch.nonzero(has_next).squeeze(1)  # (M,)
        return idx, offsets[self.steps[idx] + 1] + rank[idx]

    def last(self) -> torch.Tensor:
        """Packed index (counts[0],) of each running row's last element, sorted row order."""
        counts = torch.tensor(self.counts, device=self.rows.device)
        offsets = torch.cumsum(counts, 0) - counts  # (T',)
        n0 = self.counts[0] if self.counts else 0
        lengths = (torch.arange(n0, device=self.rows.device).unsqueeze(0)
                   < counts.unsqueeze(1)).sum(dim=0)  # (n0,)
        return offsets[lengths - 1] + torch.arange(n0, device=self.rows.device)

    def finals(self, last: torch.Tensor) -> torch.Tensor:
        """(B, ...) in original row order from final states (counts[0], ...) in sorted order;
        rows with no real step get zeros."""
        b = len(self.order)
        if last.shape[0] < b:
            last = torch.cat([last, last.new_zeros(b - last.shape[0], *last.shape[1:])])
        return last[torch.argsort(self.order)]
