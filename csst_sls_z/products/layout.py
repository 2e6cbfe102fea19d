"""What an input layout is, and which layout a file has.

A layout turns the HDUs of one band into rows, one object per row: :class:`Layout` is one
band of an open product in that layout, with the OBJID, RA and DEC of every row (read at
open time) and :meth:`Layout.read` for the spectra of some rows (read lazily, chunk by
chunk). The reader (``reader.py``) joins the bands by OBJID and never looks inside a layout.

Adding a layout (the next is the official CSST L1 product) is one new subclass in its own
module, with :meth:`Layout.detect` saying whether a file has it, and one line in
:func:`registered` below. Layouts are tried in that order; the first whose HDUs the file
has is its layout.
"""
from __future__ import annotations

import numpy as np

from .fitsutil import ProductError


class Layout:
    """One band of an input product in some layout: row r of ``ids``/``ra``/``dec`` is one object.

    Subclasses set ``name`` (what ``ProductReader.layout`` says, e.g. 'A') and ``wanted``
    (what a file of the layout has, for the message when a file has no layout), and
    implement :meth:`detect` and :meth:`read`. They read the open file only through the
    reader's public interface (``reader.py``, :class:`ProductReader`): ``reader.hdu(i)`` (a
    fitsio HDU), ``reader.read_stored_column(...)`` (a scaled column from the file's bytes),
    ``reader.memmap(offset, shape)`` and ``reader.compressed`` (whether the bytes can be
    mapped), ``reader.path`` and ``reader.identity``; and report through
    ``reader.warn(...)`` and ``reader.note_assumed_units(...)``.

    Attributes: ``band`` ('GV' or 'GI'), ``label`` (how messages name where the band is,
    e.g. 'table SPEC_GV'), ``ids`` (int64 OBJID per row), ``ra``/``dec`` (float64 per row,
    NaN where absent, or None when the layout has no positions).
    """

    name: str = ""
    wanted: str = ""

    band: str
    label: str
    ids: np.ndarray
    ra: np.ndarray | None
    dec: np.ndarray | None

    @classmethod
    def detect(cls, reader, hdus: list[tuple[int, str, str]]) -> dict[str, "Layout"]:
        """This layout's bands in the file, ``{band: Layout}``; empty when the file is not of this layout.

        ``hdus`` is ``(index, kind, upper-case EXTNAME)`` of every HDU. Raises ProductError
        for a file that is of this layout but malformed.
        """
        raise NotImplementedError

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pixel counts and flat float64 (wave, flux, err) in the internal units of ``rows``
        (distinct), in the order given."""
        raise NotImplementedError


def registered() -> tuple[type[Layout], ...]:
    """The known layouts, in the order they are tried (the registry)."""
    from .layout_a import LayoutA
    from .layout_b import LayoutB
    return (LayoutA, LayoutB)      # A's named tables first: a file with them is layout A


def detect_layout(reader, hdus) -> tuple[type[Layout], dict[str, Layout]]:
    """The first registered layout the file has and its bands; ProductError if it has none."""
    layouts = registered()
    for layout in layouts:
        sources = layout.detect(reader, hdus)
        if sources:
            return layout, sources
    raise ProductError(f"input product {reader.path} has no " + " and no ".join(c.wanted for c in layouts))
