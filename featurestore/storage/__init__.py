"""Table storage: the store's file system (:mod:`.fs`), Delta Lake tables (:mod:`.delta`) and the
DuckDB views over them (:mod:`.duck`)."""
