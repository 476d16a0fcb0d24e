"""AVSBench-semantic data: class table and palette, metadata reader, AVSBench-OV split, labels, clips."""
