"""``python -m cachebench.dashboard run APP [options] -- --db PATH``: Streamlit's own command
line, after importing what every page needs (pandas, Altair, the store's query API and the
economics), so that the first page a browser asks for does not wait on those imports.
:func:`cachebench.dashboard.command` builds this command line."""

from __future__ import annotations

import altair  # noqa: F401
import pandas  # noqa: F401
from streamlit.web.cli import main

import cachebench.dashboard.data
import cachebench.economics  # noqa: F401

if __name__ == "__main__":
    main(prog_name="streamlit")
