"""Reading extracted 1D slitless spectra and writing the SLS_REDSHIFT product.

The file contract is docs/products.md; every HDU, column and keyword name used here comes
from :mod:`csst_sls_z.datamodel`. The package:

``fitsutil.py``
    FITS plumbing that knows no layout: TFORM parsing, TUNIT conversion with astropy.units,
    TSCAL/TZERO/TNULL applied to the stored bytes, CHECKSUM/DATASUM, one-sentence errors.
``layout.py``
    :class:`Layout`, one band of a product in some layout (OBJID, RA, DEC per row and
    ``read(rows)`` for the spectra), and the registry that detects a file's layout.
``layout_a.py``, ``layout_b.py``
    The two layouts: SPEC_GV / SPEC_GI tables with one row per object (A), and one
    binary table per object with ``BAND`` in its header (B). A new layout is a new module
    like these, and one line in :func:`layout.registered`.
``reader.py``
    :class:`ProductReader` (:func:`open_product`): opens the file once, detects the layout,
    joins the bands by OBJID and reads the spectra chunk by chunk; layouts and the writer
    use only its public methods (``hdu``, ``read_stored_column``, ``memmap``, ``fileno``, ``warn``, ...).
``writer.py``
    :func:`write_redshift_product`: the output product, written durably
    (:mod:`csst_sls_z.durable`).
"""
from __future__ import annotations

from .fitsutil import ProductError, stable_objid
from .layout import Layout, detect_layout, registered
from .layout_a import LAYOUT_A, LayoutA
from .layout_b import LAYOUT_B, LayoutB
from .reader import BandData, ProductReader, open_product
from .catalog_rows import CatalogRows
from .writer import missing_directory_reason, write_redshift_product

__all__ = ["ProductError", "BandData", "ProductReader", "open_product", "write_redshift_product", "CatalogRows",
           "missing_directory_reason", "stable_objid", "Layout", "LayoutA", "LayoutB", "LAYOUT_A", "LAYOUT_B",
           "detect_layout", "registered"]
