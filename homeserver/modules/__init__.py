"""Optional product modules mounted on the server (``/v1/modules/...``)."""
