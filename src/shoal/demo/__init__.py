"""The bookinfo-shaped demo application used by ``shoal up``.

Four services, pure standard library: productpage -> details, productpage -> reviews
(v1, v2, v3) -> ratings. Each runs as ``python -m shoal.demo.<service>`` on ``$PORT``.
"""
