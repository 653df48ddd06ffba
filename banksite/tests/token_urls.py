"""A URLconf that mounts DRF's token view, as an API might, for the tests."""

from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token

urlpatterns = [
    path("", include("banksite.urls")),
    path("api/auth/token/", obtain_auth_token),
]
