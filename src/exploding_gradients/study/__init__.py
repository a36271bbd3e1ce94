"""What the chapters share once experiments have run: pandas in, tables, numbers and
figures out.

- :mod:`.growth`: per-layer and per-lag growth factors, seed spread, crossings, fits;
- :mod:`.outcomes`: how training runs ended, per seed and per group, and their text;
- :mod:`.timing`: the one timer (CPU time per step, interleaved rounds) and benchmarks;
- :mod:`.plots`: the book's figure style and the plots chapters share;
- :mod:`.remedy_matrix`: the failing configurations of each cause and the remedy matrix;
- :mod:`.clip_directions`: how clipping changes one real gradient.
"""
