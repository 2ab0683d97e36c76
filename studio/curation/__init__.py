"""Data curation and augmentation: clean, filter, deduplicate, score, paraphrase and synthesise dataset rows;
every run makes a new dataset version with its lineage."""
