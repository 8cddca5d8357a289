"""Reading stored results: statistics (rliable), plots, and topology traces for the notebooks."""
