"""How any experiment runs, knowing nothing of networks or chapters.

- :mod:`.params`: declared parameters and their validation (:class:`.params.Param`);
- :mod:`.registry`: experiments by name (:func:`.registry.experiment`);
- :mod:`.runner`: :func:`.runner.run` and :func:`.runner.sweep`, the one way to execute them;
- :mod:`.cache`: results on disk, keyed by configuration, seed and code version;
- :mod:`.backends`: where the jobs run (this process, local workers, dask);
- :mod:`.memory`: refuse a configuration the machine cannot hold, before any compute;
- :mod:`.deps`: which package modules a piece of code runs (its code version).
"""
