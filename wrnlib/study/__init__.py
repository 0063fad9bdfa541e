"""The notebook study built on wrnlib: the papermill runner and its profiles, the ablation sweeps (here or on
a Ray cluster), the tables and figures of the results, the width explorer and the throughput benchmark.

It uses the library (``wrnlib``); the library never imports it.
"""
