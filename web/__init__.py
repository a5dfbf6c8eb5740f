"""The browser page: installed as the package data of ``streamer.web`` (pyproject.toml maps this folder there), so
the server finds it through importlib.resources in a checkout, an editable install and a wheel alike."""
