"""The networks the study trains, one module each: :mod:`.mlp` (multilayer perceptron)
and :mod:`.rnn` (recurrent cells).  Import from the modules themselves: a package
``__init__`` here holds no imports, so that code depending on one model does not depend
on all of them (see :mod:`..engine.deps`)."""
