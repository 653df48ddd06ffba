from django.urls import path

from banksite.urls import urlpatterns as site_urlpatterns

from . import views

urlpatterns = [
    *site_urlpatterns,
    path("plain/accounts/<uuid:account_id>/", views.PlainAccountApi.as_view()),
    path("plain/accounts/<uuid:account_id>/deposit/", views.PlainDepositApi.as_view()),
]
