"""Table storage: the store's file system (:mod:`.fs`), Delta Lake tables (:mod:`.delta`, written in two
steps by :mod:`.staging`), the checksums of data files and caches (:mod:`.checksums`) and the DuckDB
views over them (:mod:`.duck`)."""
