"""Services, workloads and endpoints: the mesh model the generators read."""
