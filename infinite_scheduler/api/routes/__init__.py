"""The API's routers, one module each; app.py mounts them."""
