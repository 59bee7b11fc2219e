"""Import case lists from spreadsheets (CSV, XLSX) exported by the provincial platform.

`reader` turns a file into numbered rows, `mapping` turns a row into the fields of `case.filed.v1`
by a column mapping kept as data (`provincial_export.json`), and `importer` publishes them through
`connectors.sdk.LiandongClient` in acknowledged batches, with a row-by-row report and a resume state.
"""
