"""Reports: report.md, a standalone report.html and PNG plots, one module per kind of run
(batch experiment, online, transfer, sweep) over the shared writer in ``render``."""
