"""The spine of a run: its prologue, the single-process engine, the Ray engine and the
Ray Train factory every Ray pipeline (batch, online, transfer) builds its runs with."""
