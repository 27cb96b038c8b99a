"""What ZeRO-1/2/3 share: the strategy base over sharded units, parameter gathers, and the
optimizer rebuilt over each rank's pieces."""
