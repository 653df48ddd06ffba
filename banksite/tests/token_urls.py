"""A URLconf that mounts DRF's token view, as an API might, for the tests.

It comes before the site's URLs: their catch-all answers any other path
under ``api/`` with a JSON 404.
"""

from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token

urlpatterns = [
    path("api/auth/token/", obtain_auth_token),
    path("", include("banksite.urls")),
]
