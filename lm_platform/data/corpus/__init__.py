"""Reading sources into documents: readers for each source format, the document schema and writer, hub shards, text segmentation."""
