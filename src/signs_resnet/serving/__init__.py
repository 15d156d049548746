"""The HTTP API, web page, KServe v2 (REST and gRPC) and what guards them; and the client `signs predict --server`
uses."""
