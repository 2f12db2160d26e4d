"""Static project data, shipped inside the wheel as the package ``pipeline.static``.

Edit the files here (source catalog, axes, styles, schemas, plan template); the code finds them
with ``importlib.resources`` through :data:`pipeline.settings.ASSETS_DIR`, in a checkout and in an
installed wheel alike.
"""
