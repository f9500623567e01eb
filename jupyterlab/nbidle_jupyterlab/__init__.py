"""nbidle in JupyterLab: a server extension that holds what nbidle pushes,
and a prebuilt JupyterLab extension that shows it (countdown, warning
dialog, Keep running, the stopped notebook's dialog)."""

__version__ = "0.1.0"


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "nbidle-jupyterlab"}]


def _jupyter_server_extension_points():
    return [{"module": "nbidle_jupyterlab"}]


def _load_jupyter_server_extension(server_app):
    from .handlers import setup_handlers

    setup_handlers(server_app.web_app)
    server_app.log.info("nbidle_jupyterlab: nbidle/state, nbidle/keep, nbidle/activity")


# jupyter_server 1.x and the classic notebook server look for this name.
load_jupyter_server_extension = _load_jupyter_server_extension
