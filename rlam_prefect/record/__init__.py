"""The record: Parquet trace tables, the result guard, and everything read back from them."""
