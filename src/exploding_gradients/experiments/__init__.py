"""The measurements, one module per family; each registers its experiments by name
(:func:`..engine.registry.experiment`) when imported, which the package's ``__init__``
does.  This ``__init__`` holds no imports, so that an experiment's code version covers
its own module's closure only (see :mod:`..engine.deps`).

- :mod:`.feedforward`: ``signal_propagation``, ``training``, and the one run builder;
- :mod:`.curvature`: ``sharpness``, ``lr_boundary``;
- :mod:`.recurrent`: ``rnn_gradients``, ``rnn_training``.
"""
