"""Getting the app onto a cluster: placement needs, the cluster-fit check, KubeRay manifests."""
