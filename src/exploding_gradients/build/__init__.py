"""Book tooling, never imported by the library: :mod:`.bookbuild` executes a chapter
notebook with papermill, :mod:`.rules` writes the make rules of each page."""
