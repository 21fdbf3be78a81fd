"""Results kept beyond one session (the app's History): ``codec`` (a Result as a file, without pickle),
``store`` (the files and their SQLite index under ``$LAYERSCOPE_HOME/results``), ``keys`` (settings as JSON,
a stable key, the analysis's version), ``commandline`` (the equivalent ``python -m core`` line), ``bundle``
and ``figures`` (one result as a zip of settings, JSON, CSV, PNG/SVG and command), ``cli`` (``--store``).
Nothing is imported here: ``python -m core results list`` starts without numpy, pandas or torch."""
