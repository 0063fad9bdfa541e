"""The notebook study built on wrnlib.

* :mod:`.profiles`, :mod:`.runner`, :mod:`.render`: the study's profiles, executing the notebooks with papermill,
  and the executed study as web pages;
* :mod:`.notebook`: what every notebook does first (its folder, its data, the config of its parameters, the time
  check);
* per notebook: :mod:`.dataset` (01), :mod:`.predictions` (02), :mod:`.sweep` and :mod:`.cluster` (03's
  ablation, here or on a Ray cluster), :mod:`.explorer` (05), :mod:`.trust` (06);
* the results: :mod:`.collect` reads results folders into tables, :mod:`.tables` computes from them,
  :mod:`.report` writes markdown, :mod:`.formats` formats their numbers, :mod:`.plots` draws the figures;
* the commands ``python -m wrnlib bench`` (:mod:`.bench`) and ``python -m wrnlib runs`` (:mod:`.run_list`).

It uses the library (``wrnlib``); the library never imports it.
"""
