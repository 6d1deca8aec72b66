"""The parameter store: coefficient blocks, rule blocks, factor blocks and replicas
(Dask actors), with the per-epoch hand-off between the loops and the driver."""
