"""The HTTP face's private parts: :mod:`~bgjobs._web.page`, the HTML status page.

:mod:`bgjobs.wsgi` (the endpoints) and :mod:`bgjobs.flask` (the extension) are the public
modules; they re-export what users import.
"""
