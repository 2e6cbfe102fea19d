"""Reference files: what the stage's numbers come from.

* ``sets``: reference sets (a directory of files and a sha256 manifest), found, validated
  and loaded, with per-type overrides.
* ``header``: the header convention every reference file carries (type, pedigree, author,
  history, schema version), its checks and the atomic write.
* ``tables``: the small reference tables (wavegrid, calibration, thresholds) as typed
  objects, with the defaults older schema versions imply.
"""
